/**
 * Threads of a workload pinned to fewer CPUs than a new process gets (sched_setaffinity, taskset),
 * from /proc/PID/task/TID/status ("Cpus_allowed_list:").
 *
 * CRIU 4.2.1 neither dumps nor restores CPU affinity (it has no --with-cpu-affinity): a restored
 * thread gets the affinity of the CRIU that restores it, so a pinned program would run on every CPU
 * after a move without knowing (seen here: pinned to CPU 1, it ran on 0-1 after the move). Such
 * workloads are refused before the freeze (migration-source.ts). The reference is this agent's own
 * affinity: the target's restore runs with its agent's, which a cpuset applies to alike.
 */
import { readFile, readdir } from 'node:fs/promises';

export interface PinnedThread {
  pid: number;
  tid: number;
  /** As the kernel lists it, e.g. "1" or "0,2-3". */
  allowed: string;
}

/** The "Cpus_allowed_list" of a /proc status file; undefined when absent. */
export function cpusAllowed(status: string): string | undefined {
  return /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1];
}

/** Threads of `pids` whose allowed CPUs differ from `reference` (this agent's). Gone processes are skipped. */
export async function pinnedThreads(pids: readonly number[], reference?: string): Promise<PinnedThread[]> {
  const mine = reference ?? cpusAllowed(await readFile('/proc/self/status', 'utf8'));
  if (mine === undefined) return [];
  const found: PinnedThread[] = [];
  for (const pid of pids) {
    for (const name of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
      const allowed = cpusAllowed(await readFile(`/proc/${pid}/task/${name}/status`, 'utf8').catch(() => ''));
      if (allowed !== undefined && allowed !== mine) found.push({ pid, tid: Number(name), allowed });
    }
  }
  return found;
}
