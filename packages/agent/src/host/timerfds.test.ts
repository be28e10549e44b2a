import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { armedPeriodicTimers, isArmedPeriodic, parseTimerfdInfo } from './timerfds';

const fdinfo = (ticks: number, value: string, interval: string) =>
  `pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1039\nclockid: 1\nticks: ${ticks}\nsettime flags: 00\nit_value: ${value}\nit_interval: ${interval}\n`;

test('reads a timerfd from fdinfo; an expiration waiting unread (it_value 0, ticks > 0) still counts as armed', () => {
  expect(parseTimerfdInfo(fdinfo(0, '(0, 4000000)', '(0, 10000000)'))).toEqual({ ticks: 0n, valueNs: 4_000_000n, intervalNs: 10_000_000n });
  // What CRIU dumps as "disarmed" (criu#3162): a periodic timer between its expiry and its owner's read.
  expect(isArmedPeriodic(parseTimerfdInfo(fdinfo(1, '(0, 0)', '(0, 10000000)'))!)).toBe(true);
  expect(isArmedPeriodic(parseTimerfdInfo(fdinfo(0, '(2, 5)', '(1, 0)'))!)).toBe(true);
  // One-shot (no interval), disarmed (nothing pending): they move.
  expect(isArmedPeriodic(parseTimerfdInfo(fdinfo(0, '(3600, 0)', '(0, 0)'))!)).toBe(false);
  expect(isArmedPeriodic(parseTimerfdInfo(fdinfo(1, '(0, 0)', '(0, 0)'))!)).toBe(false);
  expect(isArmedPeriodic(parseTimerfdInfo(fdinfo(0, '(0, 0)', '(0, 10000000)'))!)).toBe(false);
  // Another kind of fd.
  expect(parseTimerfdInfo('pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t5\n')).toBeUndefined();
});

test('lists the armed periodic timerfds of a live process, not its one-shot one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-timers-'));
  const script = `
import ctypes, os, struct, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
periodic = libc.timerfd_create(1, 0)
libc.timerfd_settime(periodic, 0, struct.pack("qqqq", 0, 10000000, 0, 10000000), None)
once = libc.timerfd_create(1, 0)
libc.timerfd_settime(once, 0, struct.pack("qqqq", 0, 0, 3600, 0), None)
open(os.path.join(sys.argv[1], "ready"), "w").write(str(periodic))
while True: time.sleep(1)
`;
  const { child: holder, ready } = await startStateHolder(script, dir);
  try {
    const timers = await armedPeriodicTimers([holder.pid!]);
    expect(timers).toEqual([{ pid: holder.pid, fd: Number(ready), intervalNs: 10_000_000n }]);
    expect(await armedPeriodicTimers([2 ** 22 + 12345])).toEqual([]);
  } finally {
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
