/**
 * Kinds of process state a real program holds, and what a migration does with each: it moves, or
 * it is refused before anything is frozen with a reason an operator can act on (issue #17).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { waitFor } from './helpers/workload';

jest.setTimeout(180_000);

let cluster: TestCluster;
let stateDir: string;

beforeAll(async () => {
  // h3 reports that its CRIU cannot refill a pipe, as a host with a kernel that refuses the
  // vmsplice gift would (its probe would find out; here a fault says so).
  cluster = await startTestCluster('tstate', 248, { hosts: 3, agentEnvFor: (host): Record<string, string> => (host === 'h3' ? { FERRY_FAULT_NO_PIPE_DATA: '1' } : {}) });
  stateDir = await mkdtemp(join(tmpdir(), 'ferry-state-'));
});

afterAll(async () => {
  await cluster?.stop();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

type PsEntry = { name: string; host: string; state: string; pid: number };
const entriesOf = async (name: string): Promise<PsEntry[]> => ((await cluster.ferry(['ps', '--json'])).json as PsEntry[]).filter((e) => e.name === name);

/**
 * Holds an anonymous pipe with 22 unread bytes (an end of it on each side, as a pipeline stage
 * whose reader is slow would), counts in STATE/counter, and on SIGUSR1 reads what waits in the
 * pipe into STATE/pipe: the program's own view of its pipe after a move.
 */
const PIPE_HOLDER = `
import os, signal, sys, time
state = sys.argv[1]
r, w = os.pipe()
os.write(w, b"twenty-two unread byte")
os.set_blocking(r, False)
def report(_s, _f):
    try:
        data = os.read(r, 4096)
    except BlockingIOError:
        data = b""
    with open(os.path.join(state, "pipe.tmp"), "wb") as f:
        f.write(data)
    os.rename(os.path.join(state, "pipe.tmp"), os.path.join(state, "pipe"))
signal.signal(signal.SIGUSR1, report)
n = 0
while True:
    n += 1
    with open(os.path.join(state, "counter"), "w") as f:
        f.write(str(n))
    time.sleep(0.05)
`;

test('a pipe holding unread data moves with it, the bytes still waiting; a target that cannot refill a pipe is refused before the freeze', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'piped', '--json', '--', '/usr/bin/python3', '-c', PIPE_HOLDER, stateDir]);
  expect(run.code).toBe(0);
  const [before] = await waitFor('piped workload running', async () => {
    const e = await entriesOf('piped');
    return e.length === 1 && e[0].state === 'running' ? e : undefined;
  });
  await waitFor('it counts', async () => Number(await readFile(join(stateDir, 'counter'), 'utf8').catch(() => '0')) > 3);

  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; criu: { pipeData: boolean } }>;
  expect(hosts.find((h) => h.name === 'h3')!.criu.pipeData).toBe(false);
  // A target that cannot refill a pipe: refused before the freeze, naming the pipe; nothing frozen.
  const refused = await cluster.ferry(['migrate', 'piped', '--to', 'h3', '--json']);
  expect(refused.code).not.toBe(0);
  expect(refused.json.error.code).toBe('FAILED_PRECONDITION');
  expect(refused.json.error.message).toMatch(/unread data in pipes or FIFOs.*: pipe:\[\d+\] \(pid \d+ fd \d+, 22 bytes\)/);
  expect(await entriesOf('piped')).toEqual([expect.objectContaining({ host: 'h1', state: 'running', pid: before.pid })]);

  if (hosts.find((h) => h.name === 'h2')!.criu.pipeData) {
    for (const to of ['h2', 'h1']) {
      const moved = await cluster.ferry(['migrate', 'piped', '--to', to, '--json']);
      expect(moved.json).toMatchObject({ state: 'succeeded', to });
    }
    const [after] = await waitFor('piped running on h1 again', async () => {
      const e = await entriesOf('piped');
      return e.length === 1 && e[0].host === 'h1' && e[0].state === 'running' ? e : undefined;
    });
    expect(after.pid).not.toBe(before.pid);
    // The program reads its pipe: the same 22 bytes, once.
    process.kill(after.pid, 'SIGUSR1');
    const seen = await waitFor('the workload read its pipe', async () => readFile(join(stateDir, 'pipe'), 'utf8').catch(() => undefined));
    expect(seen).toBe('twenty-two unread byte');
  }
  expect((await cluster.ferry(['stop', 'piped'])).code).toBe(0);
});

/**
 * Holds three file locks, one of each kind: a POSIX record lock (lockf), an open file description
 * lock (F_OFD_SETLK) and a flock, on files in STATE. On SIGUSR1 it reports its own view in
 * STATE/locks: for each, whether a child of its own (another process, with files opened anew) is
 * kept out ("held") or gets in ("FREE").
 */
const LOCK_HOLDER = `
import fcntl, os, signal, struct, sys, time
d = sys.argv[1]
F_OFD_SETLK = 37
def lock_ofd(fd):
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
posix = open(os.path.join(d, "posix.lock"), "a+")
fcntl.lockf(posix, fcntl.LOCK_EX)
whole = open(os.path.join(d, "flock.lock"), "a+")
fcntl.flock(whole, fcntl.LOCK_EX)
ofd = os.open(os.path.join(d, "ofd.lock"), os.O_RDWR | os.O_CREAT)
lock_ofd(ofd)
def try_lock(name):
    p = os.path.join(d, name + ".lock")
    if name == "posix":
        fcntl.lockf(open(p, "a+"), fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif name == "flock":
        fcntl.flock(open(p, "a+"), fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        lock_ofd(os.open(p, os.O_RDWR))
def report(_s, _f):
    seen = []
    for name in ("posix", "ofd", "flock"):
        pid = os.fork()
        if pid == 0:
            try:
                try_lock(name)
                os._exit(1)
            except OSError:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        seen.append("%s=%s" % (name, "held" if os.WEXITSTATUS(status) == 0 else "FREE"))
    with open(os.path.join(d, "locks.tmp"), "w") as f:
        f.write(" ".join(seen))
    os.rename(os.path.join(d, "locks.tmp"), os.path.join(d, "locks"))
signal.signal(signal.SIGUSR1, report)
while True:
    time.sleep(0.05)
`;

test('file locks (POSIX, OFD, flock) in its local dir move with the workload, still its own, in the default mode, over NATS and in post-copy; a lock elsewhere is refused before the freeze', async () => {
  // The lock files live in a local dir (h1's own /srv, copied to the target with the workload).
  const lockDir = '/srv/locker';
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'locker', '--local-dir', lockDir, '--json', '--', '/usr/bin/python3', '-c', LOCK_HOLDER, lockDir]);
  expect(run.code).toBe(0);
  const locksSeen = async (host: string): Promise<string> => {
    const [entry] = await waitFor('locker running', async () => {
      const e = await entriesOf('locker');
      return e.length === 1 && e[0].state === 'running' && e[0].host === host ? e : undefined;
    });
    await dev.hostExec('tstate', host, ['rm', '-f', `${lockDir}/locks`]);
    process.kill(entry.pid, 'SIGUSR1');
    return waitFor('the workload reported its locks', async () => (await dev.hostExec('tstate', host, ['cat', `${lockDir}/locks`]).catch(() => undefined))?.stdout);
  };
  expect(await locksSeen('h1')).toBe('posix=held ofd=held flock=held');
  for (const [to, args] of [
    ['h2', []],
    ['h1', ['--transport', 'nats']],
    ['h2', ['--restore', 'post-copy']],
  ] as const) {
    const moved = await cluster.ferry(['migrate', 'locker', '--to', to, ...args, '--json']);
    expect(moved.json).toMatchObject({ state: 'succeeded', to });
    // Its own view on the target: every lock still keeps another process out.
    expect(await locksSeen(to)).toBe('posix=held ofd=held flock=held');
  }
  expect((await cluster.ferry(['stop', 'locker'])).code).toBe(0);
  await dev.hostExec('tstate', 'h2', ['rm', '-rf', lockDir]);

  // The same program with its locks in a directory every dev host shares: refused, nothing frozen.
  const shared = await mkdtemp(join(tmpdir(), 'ferry-locks-'));
  try {
    expect((await cluster.ferry(['run', '--host', 'h1', '--name', 'sharedlocks', '--json', '--', '/usr/bin/python3', '-c', LOCK_HOLDER, shared])).code).toBe(0);
    const [before] = await waitFor('sharedlocks running', async () => {
      const e = await entriesOf('sharedlocks');
      return e.length === 1 && e[0].state === 'running' ? e : undefined;
    });
    await waitFor('its locks taken', async () => (await readFile('/proc/locks', 'utf8')).split('\n').length > 3);
    const refused = await cluster.ferry(['migrate', 'sharedlocks', '--to', 'h2', '--json']);
    expect(refused.json.state).toBe('rolled-back');
    expect(refused.json.error.code).toBe('FAILED_PRECONDITION');
    expect(refused.json.error.message).toMatch(/holds file locks outside its local dirs: POSIX lock on .*posix\.lock/);
    expect(refused.json.downtimeMs).toBe(0);
    expect(await entriesOf('sharedlocks')).toEqual([expect.objectContaining({ host: 'h1', state: 'running', pid: before.pid })]);
    expect((await cluster.ferry(['stop', 'sharedlocks'])).code).toBe(0);
  } finally {
    await rm(shared, { recursive: true, force: true });
  }
});
