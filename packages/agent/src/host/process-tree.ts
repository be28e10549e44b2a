import { promises as fs } from 'node:fs';
import { ErrorCode, FerryError } from '@ferry/protocol';

/** How often the wait helpers look at /proc again. */
export const PROC_POLL_INTERVAL_MS = 10;

/** The fields of /proc/<pid>/stat that ferry relies on. */
export interface ProcessStat {
  pid: number;
  /** Executable name as the kernel keeps it (at most 15 characters). */
  comm: string;
  /** One letter: R running, S sleeping, D disk wait, T stopped, t traced, Z zombie, X dead, ... */
  state: string;
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Session id; equals pid for a session leader. */
  session: number;
  /** Clock ticks since boot when the process started: with the pid it names one process, even after pid reuse. */
  startTime: number;
}

/** Zombies ('Z') and dying tasks ('X') have no memory and run no code: for ferry they are gone. */
const DEAD_STATES = new Set(['Z', 'X', 'x']);

function assertPid(pid: number, what = 'pid'): void {
  if (!Number.isSafeInteger(pid) || pid < 1) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${what} must be a positive integer, got ${pid}`);
  }
}

/** Signals go to one process each; pid 1 (the host's init) and non-positive pids (process groups, "everyone") are refused. */
function assertSignalablePid(pid: number): void {
  assertPid(pid);
  if (pid === 1) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'refusing to signal pid 1');
}

/** Whether a /proc read failed because the process is gone (ENOENT, ESRCH). */
export function isMissingProcess(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** `read()` of a process's /proc file, or null when the process ended meanwhile (or is a zombie now). */
export async function readOfLiving<T>(read: () => Promise<T>): Promise<T | null> {
  try {
    return await read();
  } catch (err) {
    if (isMissingProcess(err) || (err as NodeJS.ErrnoException | undefined)?.code === 'EINVAL') return null;
    throw err;
  }
}

/** Parses the text of /proc/<pid>/stat. `comm` may hold spaces and parentheses, so fields are counted from the last ')'. */
export function parseProcessStat(text: string): ProcessStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) {
    throw new FerryError(ErrorCode.INTERNAL, `malformed /proc stat line: ${text.slice(0, 200)}`);
  }
  // fields[0] is field 3 of proc(5) (state), so field N of proc(5) is fields[N - 3].
  const fields = text.slice(close + 2).trim().split(' ');
  const field = (n: number): number => Number(fields[n - 3]);
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: fields[0] ?? '?',
    ppid: field(4),
    pgrp: field(5),
    session: field(6),
    startTime: field(22),
  };
}

/** Reads /proc/<pid>/stat; undefined when no such process exists. */
export async function readProcessStat(pid: number): Promise<ProcessStat | undefined> {
  assertPid(pid);
  try {
    return parseProcessStat(await fs.readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch (err) {
    if (isMissingProcess(err)) return undefined;
    throw err;
  }
}

/**
 * True while `pid` names a living process. False for zombies and for a pid the kernel has
 * handed to another process since (when `startTime` from an earlier {@link readProcessStat} is given).
 */
export async function isAlive(pid: number, startTime?: number): Promise<boolean> {
  const stat = await readProcessStat(pid);
  if (stat === undefined || DEAD_STATES.has(stat.state)) return false;
  return startTime === undefined || stat.startTime === startTime;
}

/** The PID namespace of a process, e.g. "pid:[4026531836]"; undefined when it is gone. */
export async function readPidNamespace(pid: number | 'self'): Promise<string | undefined> {
  if (pid !== 'self') assertPid(pid);
  try {
    return await fs.readlink(`/proc/${pid}/ns/pid`);
  } catch (err) {
    if (isMissingProcess(err)) return undefined;
    throw err;
  }
}

/**
 * Direct children of a process. A child belongs to the thread that forked it, so every thread's
 * /proc/<pid>/task/<tid>/children is read. Empty when the process is gone.
 */
export async function childrenOf(pid: number): Promise<number[]> {
  assertPid(pid);
  let tids: string[];
  try {
    tids = await fs.readdir(`/proc/${pid}/task`);
  } catch (err) {
    if (isMissingProcess(err)) return [];
    throw err;
  }
  const children = new Set<number>();
  for (const tid of tids) {
    let text: string;
    try {
      text = await fs.readFile(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch (err) {
      if (isMissingProcess(err)) continue; // the thread exited meanwhile
      throw err;
    }
    for (const word of text.split(/\s+/)) if (word !== '') children.add(Number(word));
  }
  return [...children].sort((a, b) => a - b);
}

/** Every pid of the tree rooted at `rootPid`, root first (breadth first). Empty when the root is gone. */
export async function listTree(rootPid: number): Promise<number[]> {
  assertPid(rootPid);
  if ((await readProcessStat(rootPid)) === undefined) return [];
  const seen = new Set<number>([rootPid]);
  const queue = [rootPid];
  for (let i = 0; i < queue.length; i++) {
    for (const child of await childrenOf(queue[i] as number)) {
      if (!seen.has(child)) {
        seen.add(child);
        queue.push(child);
      }
    }
  }
  return queue;
}

/**
 * The processes of `pids` that are alive. A zombie has released its memory, files and sockets
 * (reading its /proc/PID/mountinfo fails with EINVAL): there is nothing in it to inspect, and CRIU
 * dumps and restores it by itself, still waiting for its parent to reap it.
 */
export async function livingProcesses(pids: readonly number[]): Promise<number[]> {
  const living: number[] = [];
  for (const pid of pids) if (await isAlive(pid)) living.push(pid);
  return living;
}

/** Resident memory of one process in bytes (VmRSS); 0 for a gone process or a zombie. */
export async function rssBytes(pid: number): Promise<number> {
  assertPid(pid);
  let text: string;
  try {
    text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  } catch (err) {
    if (isMissingProcess(err)) return 0;
    throw err;
  }
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Sum of VmRSS over the tree. Shared pages count once per process, as `ps` would show them. */
export async function treeRssBytes(rootPid: number): Promise<number> {
  let total = 0;
  for (const pid of await listTree(rootPid)) total += await rssBytes(pid);
  return total;
}

/**
 * Sends `signal` to every process of the tree, root first; processes that vanish meanwhile are
 * skipped. Returns the pids signalled. Not atomic against forks: use it on a frozen tree (SIGCONT after
 * `criu dump --leave-stopped`) or to a PID namespace init with SIGKILL.
 */
export async function signalTree(rootPid: number, signal: NodeJS.Signals): Promise<number[]> {
  assertSignalablePid(rootPid);
  const signalled: number[] = [];
  for (const pid of await listTree(rootPid)) {
    assertSignalablePid(pid);
    try {
      process.kill(pid, signal);
      signalled.push(pid);
    } catch (err) {
      if (!isMissingProcess(err)) throw err;
    }
  }
  return signalled;
}

/** Sends one signal to one process; false when it was already gone. */
export function signalProcess(pid: number, signal: NodeJS.Signals): boolean {
  assertSignalablePid(pid);
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    if (isMissingProcess(err)) return false;
    throw err;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits until the process is gone (or a zombie); true if it went within `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number, startTime?: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isAlive(pid, startTime))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(PROC_POLL_INTERVAL_MS);
  }
}
