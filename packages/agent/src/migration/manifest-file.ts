/**
 * The workload manifest and the workload's log copy, as files in a migration's work dir: written
 * by the source next to CRIU's images, travelling with them, read back by the target (and by
 * either side's cleanup, which needs the pins it lists).
 */
import { copyFile, mkdir, open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError, MANIFEST_FILE, MAX_MANIFEST_BYTES, parseMessage, WorkloadManifest, type PinnedFile } from '@ferry/protocol';
import type { WorkloadRecord } from '../workloads/inventory';

/** The workload's output log as it was at the dump, travelling with the image. */
export const LOG_COPY_FILE = 'ferry-workload.log';

/** Writes the manifest and the log copy of a frozen workload into its image dir. */
export async function writeManifest(dir: string, rec: WorkloadRecord, pins: PinnedFile[]): Promise<void> {
  const logBytes = (await stat(rec.logPath).catch(() => null))?.size ?? 0;
  if (logBytes > 0) await copyFile(rec.logPath, join(dir, LOG_COPY_FILE));
  else await writeFile(join(dir, LOG_COPY_FILE), '');
  const manifest: WorkloadManifest = {
    name: rec.name,
    argv: rec.argv,
    env: rec.env,
    cwd: rec.cwd,
    logPath: rec.logPath,
    startedAt: rec.startedAt,
    logBytes,
    mounts: rec.mounts ?? [],
    pins,
    ...(rec.address ? { address: rec.address } : {}),
  };
  await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(manifest), { mode: 0o600 });
}

/** Reads at most MAX_MANIFEST_BYTES: the file came from another host. */
async function readBounded(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(MAX_MANIFEST_BYTES + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead > MAX_MANIFEST_BYTES) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${MANIFEST_FILE} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** The manifest of an image dir, checked against its schema; RESTORE_FAILED when absent, malformed or of another workload. */
export async function readManifest(dir: string, workload: string): Promise<WorkloadManifest> {
  let m: WorkloadManifest;
  try {
    m = parseMessage(WorkloadManifest, JSON.parse(await readBounded(join(dir, MANIFEST_FILE))));
  } catch (err) {
    throw new FerryError(ErrorCode.RESTORE_FAILED, `image has no readable ${MANIFEST_FILE}: ${(err as Error).message}`, { cause: err });
  }
  if (m.name !== workload) throw new FerryError(ErrorCode.RESTORE_FAILED, `image is of ${m.name}, expected ${workload}`);
  return m;
}

/** What a migration's manifest says, as far as it got written and is valid (empty when it never was). */
export async function manifestIn(dir: string): Promise<Partial<WorkloadManifest>> {
  try {
    const parsed = WorkloadManifest.partial().safeParse(JSON.parse(await readBounded(join(dir, MANIFEST_FILE))));
    return parsed.success ? parsed.data : {};
  } catch {
    return {};
  }
}

/**
 * CRIU reopens the workload's log by path and refuses a file whose size differs from the dump
 * ("File ... has bad size"). On a shared filesystem the file is already there and identical;
 * elsewhere the copy that travelled with the image is put in place.
 */
export async function placeWorkloadLog(dir: string, m: WorkloadManifest): Promise<void> {
  const current = await stat(m.logPath).catch(() => null);
  if (current && current.size === m.logBytes) return;
  await mkdir(join(m.logPath, '..'), { recursive: true, mode: 0o700 });
  await copyFile(join(dir, LOG_COPY_FILE), m.logPath);
}
