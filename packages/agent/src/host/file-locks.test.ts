import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { locksHeld } from './file-locks';

test('lists each lock a process holds, of every kind, with the file it is on and the fd it was taken through', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-locks-'));
  const script = `
import fcntl, os, struct, sys, time
d = sys.argv[1]
a = open(os.path.join(d, "posix"), "a+"); fcntl.lockf(a, fcntl.LOCK_EX)
b = open(os.path.join(d, "flock"), "a+"); fcntl.flock(b, fcntl.LOCK_EX)
c = os.open(os.path.join(d, "ofd"), os.O_RDWR | os.O_CREAT); fcntl.fcntl(c, 37, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
open(os.path.join(d, "plain"), "a+")
open(os.path.join(d, "ready"), "w").write("1")
while True: time.sleep(1)
`;
  const holder = (await startStateHolder(script, dir)).child;
  try {
    const locks = await locksHeld([holder.pid!]);
    expect(locks.map((l) => [l.kind, l.path]).sort()).toEqual([
      ['FLOCK', join(dir, 'flock')],
      ['OFDLCK', join(dir, 'ofd')],
      ['POSIX', join(dir, 'posix')],
    ]);
    expect(locks.every((l) => l.pid === holder.pid && Number.isInteger(l.fd))).toBe(true);
    // A process that is gone holds nothing (and is not an error).
    expect(await locksHeld([2 ** 22 + 12345])).toEqual([]);
  } finally {
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
