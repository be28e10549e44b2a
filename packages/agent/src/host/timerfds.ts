/**
 * Periodic timerfds a workload holds armed, from /proc/PID/fdinfo ("clockid:", "ticks:",
 * "it_value: (s, ns)", "it_interval: (s, ns)").
 *
 * CRIU 4.2.1 restores such a timer disarmed whenever an expiration waits unread at the dump
 * (checkpoint-restore/criu#3162): the kernel restarts a periodic timerfd's hrtimer only when its
 * owner reads it, so meanwhile fdinfo shows it_value (0, 0), which CRIU dumps, and a restore with a
 * zero it_value disarms it. The timer then fires once (the unread ticks) and never again. A frozen
 * workload reads nothing, so any period shorter than the freeze hits it (seen here: a 10 ms timer
 * moved once and stopped on the next move). Such timers are refused before the freeze
 * (migration-source.ts); one-shot timers, disarmed ones and those with only an interval set move.
 */
import { readFile, readdir } from 'node:fs/promises';

export interface ArmedPeriodicTimer {
  pid: number;
  fd: number;
  /** Its period, in nanoseconds. */
  intervalNs: bigint;
}

/** The fields of one timerfd's fdinfo ferry reads; undefined for an fd of another kind. */
export interface TimerfdInfo {
  ticks: bigint;
  valueNs: bigint;
  intervalNs: bigint;
}

export function parseTimerfdInfo(text: string): TimerfdInfo | undefined {
  if (!/^clockid:/m.test(text)) return undefined;
  const pair = (name: string): bigint | undefined => {
    const m = new RegExp(`^${name}:\\s*\\((\\d+),\\s*(\\d+)\\)`, 'm').exec(text);
    return m ? BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!) : undefined;
  };
  const ticks = /^ticks:\s*(\d+)/m.exec(text);
  const valueNs = pair('it_value');
  const intervalNs = pair('it_interval');
  if (!ticks || valueNs === undefined || intervalNs === undefined) return undefined;
  return { ticks: BigInt(ticks[1]!), valueNs, intervalNs };
}

/** Armed: a pending expiry (it_value) or expirations waiting unread (ticks); periodic: an interval. */
export function isArmedPeriodic(t: TimerfdInfo): boolean {
  return t.intervalNs > 0n && (t.valueNs > 0n || t.ticks > 0n);
}

/** Every armed periodic timerfd of the processes. Processes or fds gone meanwhile are skipped. */
export async function armedPeriodicTimers(pids: readonly number[]): Promise<ArmedPeriodicTimer[]> {
  const found: ArmedPeriodicTimer[] = [];
  for (const pid of pids) {
    for (const name of await readdir(`/proc/${pid}/fdinfo`).catch(() => [] as string[])) {
      const fd = Number(name);
      if (!Number.isInteger(fd)) continue;
      const info = parseTimerfdInfo(await readFile(`/proc/${pid}/fdinfo/${name}`, 'utf8').catch(() => ''));
      if (info && isArmedPeriodic(info)) found.push({ pid, fd, intervalNs: info.intervalNs });
    }
  }
  return found;
}
