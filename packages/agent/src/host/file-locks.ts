/**
 * File locks a workload holds (POSIX record locks, OFD locks, flock), from /proc/PID/fdinfo: the
 * kernel lists each lock on the fd it was taken through ("lock:\t1: POSIX ADVISORY WRITE ...").
 *
 * CRIU dumps and restores them (`--file-locks`, criu-driver.ts), but a lock moves only with a file
 * that moves: until the target confirms, the frozen copy on the source keeps its locks, so a target
 * that sees the same file (a cluster filesystem, or the dev cluster's shared rootfs) could not take
 * the lock again and its restore would wait on it. Locks on files in the workload's local dirs
 * (copied: the target's own files) move; any other is refused before the freeze (migration-source.ts).
 */
import { readFile, readdir, readlink } from 'node:fs/promises';

export interface HeldLock {
  pid: number;
  fd: number;
  /** The locked file, as the workload's process sees it. */
  path: string;
  /** POSIX, OFDLCK, FLOCK (and whatever else the kernel names). */
  kind: string;
}

/** Every lock the processes hold, by the fd it was taken through. Processes or fds gone meanwhile are skipped. */
export async function locksHeld(pids: readonly number[]): Promise<HeldLock[]> {
  const locks: HeldLock[] = [];
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fdinfo`).catch(() => [] as string[]);
    for (const name of fds) {
      const fd = Number(name);
      if (!Number.isInteger(fd)) continue;
      const info = await readFile(`/proc/${pid}/fdinfo/${name}`, 'utf8').catch(() => '');
      for (const line of info.split('\n')) {
        const m = /^lock:\s+\d+:\s+(\S+)/.exec(line);
        if (!m) continue;
        const path = await readlink(`/proc/${pid}/fd/${name}`).catch(() => undefined);
        if (path !== undefined) locks.push({ pid, fd, path, kind: m[1]! });
      }
    }
  }
  return locks;
}
