/**
 * Pipes and FIFOs of a process tree that hold unread data. CRIU dumps that data and refills the
 * pipe on restore with vmsplice(SPLICE_F_GIFT | SPLICE_F_NONBLOCK); newer kernels refuse the gift
 * (EOPNOTSUPP; CRIU PR #3077 adds a write() fallback, CRIU 4.2.1 lacks it). Where the target's
 * probe says its CRIU cannot refill a pipe (CriuInfo.pipeData false), such a workload is refused
 * before anything is frozen, naming the pipes, instead of failing at restore. (The kernel here,
 * 6.18, still takes the gift: the probe reports pipeData, and pipes with data move.)
 *
 * Each pipe is looked at through a descriptor of its own, opened through /proc/PID/fd/N (a pipe's
 * magic link reopens the same pipe), and asked FIONREAD: nothing is read, the workload's own
 * descriptors are untouched.
 *
 * A FIFO's bytes are refilled into the FIFO node at its path on the target. In a declared local dir
 * that node is the target's own copy and the bytes arrive once (test/state-classes.test.ts). Anywhere
 * else it is another host's node (which must exist) or, where hosts share the filesystem, the very
 * FIFO the frozen source still holds until the target confirms: measured on the dev cluster, a FIFO
 * holding 22 bytes held 44 after the move. Such FIFOs are refused before the freeze (migration-source.ts).
 */
import { constants as fsConstants } from 'node:fs';
import { open, readdir, readlink, stat } from 'node:fs/promises';
import type { LinuxSyscalls } from '@ferry/native';

export interface PipeWithData {
  pid: number;
  fd: number;
  /** `pipe:[inode]` for an anonymous pipe, the path for a FIFO. */
  name: string;
  unreadBytes: number;
}

/** The FIFOs (pipes with a path) among `pipes` that lie outside every one of `localDirs`. */
export function fifosOutside(pipes: readonly PipeWithData[], inLocalDir: (path: string) => boolean): PipeWithData[] {
  return pipes.filter((p) => p.name.startsWith('/') && !inLocalDir(p.name));
}

/** Every pipe or FIFO of `pids` that holds unread bytes, once per pipe (the first fd seen). */
export async function pipesWithData(pids: number[], sys: Pick<LinuxSyscalls, 'unreadBytes'>): Promise<PipeWithData[]> {
  const seen = new Set<string>();
  const found: PipeWithData[] = [];
  for (const pid of pids) {
    for (const entry of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const link = `/proc/${pid}/fd/${entry}`;
      const st = await stat(link).catch(() => null);
      if (!st?.isFIFO()) continue;
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
      // O_NONBLOCK: opening a FIFO's read side never waits for a writer.
      const fh = await open(link, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch(() => null);
      if (fh === null) continue;
      try {
        const unreadBytes = sys.unreadBytes(fh.fd);
        if (unreadBytes > 0) found.push({ pid, fd: Number(entry), name: await readlink(link).catch(() => 'pipe'), unreadBytes });
      } finally {
        await fh.close();
      }
    }
  }
  return found;
}
