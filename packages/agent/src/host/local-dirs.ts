/**
 * Host-local directories that belong to a workload (`ferry run --local-dir`): they live on this
 * host's own disk, not on a cluster filesystem, and move with the workload (migration/local-dir-copy.ts).
 * An agent runs as root and a target writes a whole tree into such a directory, so which paths may
 * be one is this host's decision: only under its configured roots (FERRY_LOCAL_DIR_ROOTS, default
 * /srv), never a root itself, never one inside another.
 */
import { chown, lstat, mkdir } from 'node:fs/promises';
import { ErrorCode, FerryError, LocalDir } from '@ferry/protocol';

export const DEFAULT_LOCAL_DIR_ROOTS = ['/srv'];

/** `inner` is `outer` or below it. */
function within(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(`${outer}/`);
}

/**
 * Checks a workload's local dirs against this host's roots: each a normalized absolute path
 * strictly below one of them, none inside another. INVALID_ARGUMENT names the offending path.
 */
export function checkLocalDirs(dirs: readonly string[], roots: readonly string[]): void {
  for (const dir of dirs) {
    if (!LocalDir.safeParse(dir).success) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `local dir ${JSON.stringify(dir)} is not an absolute, normalized path`);
    if (!roots.some((root) => dir !== root && within(dir, root))) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `local dir ${dir} is not below this host's local dir roots (${roots.join(', ')}; FERRY_LOCAL_DIR_ROOTS)`);
    }
  }
  for (const a of dirs) {
    for (const b of dirs) {
      if (a !== b && within(a, b)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `local dir ${a} is inside local dir ${b}`);
    }
  }
  if (new Set(dirs).size !== dirs.length) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'a local dir is named twice');
}

/** Creates missing local dirs (0755); an existing path must be a directory, not a symlink. */
export async function ensureLocalDirs(dirs: readonly string[], owner?: { uid: number; gid: number }): Promise<void> {
  for (const dir of dirs) {
    const st = await lstat(dir).catch(() => undefined);
    if (st === undefined) {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      // A workload run as another user owns the dirs made for it (only those: an existing one is left as it is).
      if (owner) await chown(dir, owner.uid, owner.gid);
      continue;
    }
    if (!st.isDirectory()) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `local dir ${dir} exists and is not a directory`);
  }
}

/** Whether `path` lies in one of the local dirs. */
export function inLocalDir(path: string, dirs: readonly string[]): boolean {
  return dirs.some((dir) => within(path, dir));
}
