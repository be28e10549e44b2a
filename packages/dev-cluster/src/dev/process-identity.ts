import * as fs from 'node:fs';

/**
 * A process as pid + start time (field 22 of /proc/PID/stat, clock ticks since boot). A pid alone
 * may be reused after the process dies; the pair never is, so we signal only what we started.
 */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

/** How often we look whether signalled processes are gone. */
const EXIT_POLL_INTERVAL_MS = 50;
/** After SIGKILL a process normally vanishes at once; longer means it is stuck in the kernel (D state). */
const KILL_WAIT_MS = 5_000;

interface ProcStat {
  state: string;
  startTime: string;
}

function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and ')' — the fields after the LAST ')' are fixed.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  return { state: fields[0], startTime: fields[19] };
}

/** The identity of a running process, or null if it is gone. */
export function identifyProcess(pid: number): ProcessIdentity | null {
  const stat = readProcStat(pid);
  if (stat === null || isDeadState(stat.state)) return null;
  return { pid, startTime: stat.startTime };
}

function isDeadState(state: string): boolean {
  // A zombie has exited; it only waits for a parent that may never reap it (PID 1 here is not a real init).
  return state === 'Z' || state === 'X' || state === 'x';
}

/** True while this exact process (same pid and start time) exists and has not exited. */
export function isProcessAlive(identity: ProcessIdentity): boolean {
  const stat = readProcStat(identity.pid);
  return stat !== null && stat.startTime === identity.startTime && !isDeadState(stat.state);
}

/** Sends a signal to this exact process; false if it is no longer alive. */
export function signalProcess(identity: ProcessIdentity, signal: NodeJS.Signals): boolean {
  if (!isProcessAlive(identity)) return false;
  try {
    process.kill(identity.pid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits until none of the processes is alive or the time is up; returns the survivors. */
export async function waitForExit(identities: ProcessIdentity[], timeoutMs: number): Promise<ProcessIdentity[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = identities.filter(isProcessAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(EXIT_POLL_INTERVAL_MS);
    alive = alive.filter(isProcessAlive);
  }
  return alive;
}

/**
 * SIGTERM, then SIGKILL whatever still lives after `graceMs`. Returns the processes that survived
 * even SIGKILL (stuck in uninterruptible sleep), normally none.
 */
export async function terminateProcesses(identities: ProcessIdentity[], graceMs: number): Promise<ProcessIdentity[]> {
  const signalled = identities.filter((identity) => signalProcess(identity, 'SIGTERM'));
  const stubborn = await waitForExit(signalled, graceMs);
  const killed = stubborn.filter((identity) => signalProcess(identity, 'SIGKILL'));
  return waitForExit(killed, KILL_WAIT_MS);
}

/** SIGKILL at once and wait for the processes to be gone; returns survivors. */
export async function killProcesses(identities: ProcessIdentity[]): Promise<ProcessIdentity[]> {
  const killed = identities.filter((identity) => signalProcess(identity, 'SIGKILL'));
  return waitForExit(killed, KILL_WAIT_MS);
}
