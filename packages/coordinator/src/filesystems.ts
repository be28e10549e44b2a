/**
 * The cluster's shared filesystems (name -> type, source, options): configuration the coordinator
 * holds, so `ferry run --mount shared:/data` names a filesystem and agents get the whole spec.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ErrorCode, FerryError, FilesystemSpec, parseMessage, type MountRef, type MountSpec } from '@ferry/protocol';

/** Reads a JSON list of filesystems (the dev cluster writes one; Helm renders one from values). */
export function loadFilesystemsFile(path: string): FilesystemSpec[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `cannot read the filesystems file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const list = parseMessage(z.array(FilesystemSpec).max(256), raw);
  const names = new Set<string>();
  for (const fs of list) {
    if (names.has(fs.name)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `filesystem ${fs.name} is defined twice in ${path}`);
    names.add(fs.name);
  }
  return list;
}

/**
 * The mounts a migration's target is asked to make for a workload: by the names the workload was
 * reported with, from this coordinator's own configuration. The source, type and options an agent
 * reports are never used: they become root mount commands on another host (an sshfs
 * `ssh_command=` runs a program). A name the configuration lacks is NOT_FOUND, before anything freezes.
 */
export function mountsForMigration(filesystems: FilesystemSpec[], reported: Pick<MountSpec, 'name' | 'path'>[]): MountSpec[] {
  return resolveMounts(
    filesystems,
    reported.map((m) => ({ fs: m.name, path: m.path })),
  );
}

/** Turns `--mount FS:PATH` references into full mount specs; an unknown name is NOT_FOUND. */
export function resolveMounts(filesystems: FilesystemSpec[], refs: MountRef[]): MountSpec[] {
  const paths = new Set<string>();
  return refs.map((ref) => {
    const fs = filesystems.find((f) => f.name === ref.fs);
    if (!fs) {
      const known = filesystems.map((f) => f.name).join(', ') || 'none configured';
      throw new FerryError(ErrorCode.NOT_FOUND, `no filesystem named ${ref.fs} (known: ${known})`);
    }
    if (paths.has(ref.path)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `two mounts at ${ref.path}`);
    paths.add(ref.path);
    return { ...fs, path: ref.path };
  });
}
