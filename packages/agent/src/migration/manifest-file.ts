/**
 * The workload manifest and the workload's log copy, as files in a migration's work dir: written
 * by the source next to CRIU's images, travelling with them, read back by the target (and by
 * either side's cleanup, which needs the pins it lists).
 */
import { constants as fsConstants } from 'node:fs';
import { copyFile, mkdir, open, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ErrorCode, FerryError, MANIFEST_FILE, MAX_MANIFEST_BYTES, parseMessage, WorkloadManifest, type PinnedFile } from '@ferry/protocol';
import { hasOwnRoot, type WorkloadRecord } from '../workloads/inventory';
import { workloadLogPath } from '../workloads/workloads';

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
    ...(rec.user ? { user: rec.user } : {}),
    ...(hasOwnRoot(rec) ? { ownRoot: true } : {}),
    ...(rec.ownNetwork ? { ownNetwork: true } : {}),
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

/** What the target knows on its own about a migration, to hold an image's manifest against. */
export interface ManifestExpectations {
  migrationId: string;
  /** This agent's data dir: a workload's log is `<dataDir>/workloads/<name>/output.log` on every host. */
  dataDir: string;
  /** Mount points of the shared filesystems the coordinator asked this host to mount for the migration. */
  mountRoots: string[];
  /** The workload's service address as the coordinator knows it (none: it has none). */
  address?: string;
}

/** open(2) flags that create or truncate: never part of an open file's flags, never allowed from another host. */
const FORBIDDEN_PIN_FLAGS = fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_TRUNC | fsConstants.O_NOCTTY | fsConstants.O_DIRECTORY;

/** Why a pin cannot be this migration's, or null when it can. */
export function pinProblem(pin: PinnedFile, expect: Pick<ManifestExpectations, 'migrationId' | 'mountRoots'>): string | null {
  const name = basename(pin.pinPath);
  if (!new RegExp(`^\\.ferry-pin-${expect.migrationId}-[0-9a-f]{1,16}$`).test(name)) return `pin ${pin.pinPath} is not named for migration ${expect.migrationId}`;
  if (!expect.mountRoots.some((root) => pin.pinPath.startsWith(root.endsWith('/') ? root : `${root}/`))) {
    return `pin ${pin.pinPath} is on none of the migration's shared filesystems`;
  }
  if ((pin.flags & FORBIDDEN_PIN_FLAGS) !== 0) return `pin ${pin.pinPath} asks to be opened with create/truncate flags (${pin.flags.toString(8)})`;
  return null;
}

/**
 * The target acts on a manifest only where it matches what the target derives itself: the log at
 * this host's own path for the workload, pins named for this migration on the filesystems the
 * coordinator gave, opened without create or truncate, mounts only where the coordinator mounted.
 * Anything else is RESTORE_FAILED: the image came from another host, and a manifest that names
 * other paths would have root write or unlink them.
 */
export function checkManifestForTarget(m: WorkloadManifest, expect: ManifestExpectations): void {
  const logPath = workloadLogPath(expect.dataDir, m.name);
  const problems = [
    ...(m.logPath === logPath ? [] : [`log path ${m.logPath} is not ${logPath}`]),
    ...(m.address === expect.address ? [] : [`service address ${m.address ?? 'none'} is not the coordinator's ${expect.address ?? 'none'}`]),
    ...m.pins.map((p) => pinProblem(p, expect)).filter((p): p is string => p !== null),
    // The target mounts and records only the coordinator's filesystems; a manifest naming others is not this migration's.
    ...m.mounts.filter((mount) => !expect.mountRoots.includes(mount.path)).map((mount) => `mount ${mount.name} at ${mount.path} is not one the coordinator gave`),
  ];
  if (problems.length > 0) {
    throw new FerryError(ErrorCode.RESTORE_FAILED, `the image's manifest is refused: ${problems.slice(0, 3).join('; ')}`, { details: problems.slice(0, 50) });
  }
}
