import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { cpusAllowed, pinnedThreads } from './cpu-affinity';

test('reads the allowed CPUs from a status file', () => {
  expect(cpusAllowed('Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n')).toBe('0-1');
  expect(cpusAllowed('Name:\tx\n')).toBeUndefined();
});

test('finds the one thread of a process pinned to a CPU of its own, not the others', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-affinity-'));
  // One thread pinned to CPU 0, the main thread left alone.
  const script = `
import os, sys, threading, time
def pinned():
    os.sched_setaffinity(0, {0})
    open(os.path.join(sys.argv[1], "ready"), "w").write(str(threading.get_native_id()))
    time.sleep(60)
threading.Thread(target=pinned, daemon=True).start()
time.sleep(60)
`;
  const { child, ready } = await startStateHolder(script, dir);
  try {
    const found = await pinnedThreads([child.pid!], `0-${cpus().length - 1}`);
    if (cpus().length > 1) expect(found).toEqual([{ pid: child.pid, tid: Number(ready), allowed: '0' }]);
    else expect(found).toEqual([]);
    expect(await pinnedThreads([2 ** 22 + 12345])).toEqual([]);
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
