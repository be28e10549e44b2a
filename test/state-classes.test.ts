/**
 * Classes of process state (issue #17), each held by a fixture program that reports its own view of
 * it, moved h1 -> h2 -> h1 -> h2 -> h1 through every mode (default, direct, NATS, post-copy): after
 * each move the program's view is what it was, one copy runs, it was restored (not started again)
 * and it carries on counting. docs/compatibility.md names these tests.
 */
import { mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { FixtureWorkload } from './helpers/fixture-workload';
import type { JsonDoc } from './helpers/json-doc';
import { waitFor } from './helpers/workload';

jest.setTimeout(300_000);

const CLUSTER = 'tclass';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 242);
});

afterAll(async () => {
  await cluster?.stop();
  // The cluster filesystem's mount point, made on the machine's filesystem (the hosts share it), empty now.
  await rmdir('/ferry-tclass-data').catch(() => undefined);
});

/** Each mode once, alternating hosts, so every mode moves it both ways across the run of tests. */
const MODES = [
  { mode: 'default', to: 'h2', args: [] as string[] },
  { mode: 'direct', to: 'h1', args: ['--transport', 'direct'] },
  { mode: 'nats', to: 'h2', args: ['--transport', 'nats'] },
  { mode: 'post-copy', to: 'h1', args: ['--restore', 'post-copy'] },
] as const;

/**
 * A migration's result moved the way its mode asked: succeeded, over the transport asked for (direct,
 * NATS), restored by post-copy when asked (its memory then through the page tunnel).
 */
function expectMovedBy(mode: string, moved: JsonDoc): void {
  const asked = mode === 'direct' || mode === 'nats';
  const how = { state: moved?.state, error: moved?.error, transport: asked ? moved?.transport : mode, postCopy: moved?.restore === 'post-copy' };
  expect({ mode, ...how }).toEqual({ mode, state: 'succeeded', error: undefined, transport: mode, postCopy: mode === 'post-copy' });
}

type PsEntry = { name: string; host: string; state: string; pid: number };

async function runningOn(name: string, host: string): Promise<PsEntry> {
  return waitFor(`${name} running on ${host}`, async () => {
    const e = ((await cluster.ferry(['ps', '--json'])).json as PsEntry[]).filter((x) => x.name === name);
    return e.length === 1 && e[0].host === host && e[0].state === 'running' ? e[0] : undefined;
  }, 30_000);
}

/**
 * fd-kinds.py holds pipes with unread data: they move only where the target's CRIU can refill a pipe
 * (its probe's `pipeData`, true on this machine kind); elsewhere the pre-flight refuses them first.
 */
async function expectPipeData(): Promise<void> {
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; criu: { pipeData: boolean } }>;
  expect(hosts.map((h) => [h.name, h.criu.pipeData]).sort()).toEqual([['h1', true], ['h2', true]]);
}

/** Launches `w` as `name` on h1 with `runArgs` and `args`; resolves with its ps entry once it counts. */
async function launch(name: string, w: FixtureWorkload, args: string[], runArgs: string[] = []): Promise<PsEntry> {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', name, ...runArgs, '--json', '--', ...w.argv(...args)]);
  expect(run.code).toBe(0);
  const entry = await runningOn(name, 'h1');
  await w.advancesPast(5);
  return entry;
}

/**
 * The workload after a move (or in place): on `host` alone, `live` processes of it in the machine's
 * /proc (and `zombies`), started once, counting on from where it was.
 */
async function expectCarriesOn(name: string, w: FixtureWorkload, host: string, { live = 1, zombies = 0 } = {}): Promise<PsEntry> {
  const entry = await runningOn(name, host);
  await waitFor(`${live} live and ${zombies} zombie processes of ${name}`, async () => {
    const ps = await w.processes();
    return ps.filter((p) => p.state !== 'Z').length === live && ps.filter((p) => p.state === 'Z').length === zombies && ps.some((p) => p.pid === entry.pid);
  }, 20_000);
  expect(await w.starts()).toBe(1);
  await w.advancesPast(await w.counter());
  return entry;
}

/** Moves `name` through every mode; after each, `check(view, mode, host)` on the program's own view. */
async function throughEveryMode(
  name: string,
  w: FixtureWorkload,
  check: (view: JsonDoc, mode: string, host: string) => Promise<void> | void,
  shape: { live?: number; zombies?: number } = {},
  beforeView: (host: string, mode: string) => Promise<void> = async () => undefined,
): Promise<void> {
  let entry = await expectCarriesOn(name, w, 'h1', shape);
  await beforeView('h1', 'start');
  await check(await w.view(entry.pid), 'start', 'h1');
  for (const { mode, to, args } of MODES) {
    const moved = await cluster.ferry(['migrate', name, '--to', to, ...args, '--json']);
    expectMovedBy(mode, moved.json);
    const before = entry.pid;
    entry = await expectCarriesOn(name, w, to, shape);
    expect(entry.pid).not.toBe(before);
    await beforeView(to, mode);
    await check(await w.view(entry.pid), mode, to);
  }
}

test('special fds move in every mode: memfd (data, mapped), eventfd (its count), signalfd (a pending blocked signal), timerfds (one-shot, pending or re-armed and still firing), epoll (still reporting a pipe ready), inotify (a watch in a local dir, still reporting), a FIFO in a local dir holding data', async () => {
  await expectPipeData();
  const w = await FixtureWorkload.create('fd-kinds.py');
  const watched = '/srv/fdkinds/watched';
  await dev.hostExec(CLUSTER, 'h1', ['mkdir', '-p', watched]);
  try {
    await launch('fdkinds', w, [watched, '--fifo', '/srv/fdkinds/fifo'], ['--local-dir', '/srv/fdkinds']);
    const created: string[] = [];
    let lastExpirations = -1;
    let lastHour = 3600e9;
    await throughEveryMode(
      'fdkinds',
      w,
      (view, mode) => {
        expect({ mode, ...view, counter: undefined, timerfd: undefined }).toEqual({
          mode,
          counter: undefined,
          timerfd: undefined,
          memfd: { patternOk: true, mappedCounter: view.counter, readCounter: view.counter, size: 1024 * 1024 },
          eventfd: 41,
          signalfd: 12, // SIGUSR2, still pending
          // The pipe still holds its unread byte, and the epoll set still watches both pipes.
          epoll: { fullReady: true, fullBytes: 1, emptyReadyAfterWrite: true },
          inotify: created,
          fifo: 22, // its unread bytes, in the target's own FIFO (the local dir's copy), once
        });
        // The re-armed one-shot timer still fires; the one in an hour is still pending, nearer now.
        const { rearmed, inAnHour } = view.timerfd;
        expect({ mode, fired: view.timerfd.expirations > lastExpirations, rearmed: rearmed.intervalNs, inAnHour: inAnHour.intervalNs }).toEqual({ mode, fired: true, rearmed: 0, inAnHour: 0 });
        expect(inAnHour.nextNs).toBeGreaterThan(0);
        expect(inAnHour.nextNs).toBeLessThan(lastHour);
        lastHour = inAnHour.nextNs;
        lastExpirations = view.timerfd.expirations;
      },
      {},
      async (host, mode) => {
        // The local dir moved with it: every file made so far is there.
        expect({ mode, files: (await dev.hostExec(CLUSTER, host, ['ls', watched])).stdout.split('\n').filter(Boolean).sort() }).toEqual({ mode, files: [...created].sort() });
        // A new file in the watched dir, on the host it runs on now: its watch must see it.
        const file = `on-${host}-after-${mode}`;
        await dev.hostExec(CLUSTER, host, ['touch', `${watched}/${file}`]);
        created.push(file);
      },
    );
    expect((await cluster.ferry(['stop', 'fdkinds'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'fdkinds']);
    await dev.hostExec(CLUSTER, 'h1', ['rm', '-rf', '/srv/fdkinds']).catch(() => undefined);
    await dev.hostExec(CLUSTER, 'h2', ['rm', '-rf', '/srv/fdkinds']).catch(() => undefined);
    await w.remove();
  }
});

test('threads move in every mode, each with its own name, signal mask, memory and count', async () => {
  const w = await FixtureWorkload.create('threads.py');
  try {
    await launch('threads', w, ['4']);
    let last: Record<string, number> = {};
    await throughEveryMode('threads', w, (view, mode) => {
      expect({ mode, tasks: view.tasks }).toEqual({ mode, tasks: 5 });
      for (const i of ['1', '2', '3', '4']) {
        const t = view.threads[i];
        expect({ mode, i, comm: t.comm, dataOk: t.dataOk, blocked: t.blocked }).toEqual({ mode, i, comm: `worker-${i}`, dataOk: true, blocked: [view.sigrtmin + Number(i)] });
        // Each thread counts on from where it was.
        expect(t.count).toBeGreaterThan(last[i] ?? 0);
      }
      last = Object.fromEntries(Object.entries(view.threads).map(([i, t]) => [i, (t as { count: number }).count]));
    });
    // Every thread still runs after the last move: their counts go on.
    const entry = await runningOn('threads', 'h1');
    await waitFor('every thread counting', async () => {
      const v = await w.view(entry.pid);
      return ['1', '2', '3', '4'].every((i) => v.threads[i].count > last[i]!);
    });
    expect((await cluster.ferry(['stop', 'threads'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'threads']);
    await w.remove();
  }
});

test('sessions, process groups and a zombie move in every mode: a child in its own group, a setsid grandchild, an unreaped child still waiting to be reaped', async () => {
  const w = await FixtureWorkload.create('process-relations.py');
  try {
    await launch('relations', w, []);
    const shape = { live: 3, zombies: 1 };
    const views = async () => Object.fromEntries(await Promise.all(['root', 'child', 'grandchild'].map(async (r) => [r, (await w.file(r)).split(' ').map(Number)] as const)));
    await throughEveryMode('relations', w, async (view, mode) => {
      // The zombie: exited with 7, never reaped, still the root's child.
      expect({ mode, zombie: view.zombie }).toEqual({ mode, zombie: { pid: view.zombiePid, status: 7 } });
      expect(view.childPgid).toBe(view.childPid);
      // Each process's own view (pid ppid pgid sid n), and each still counting.
      const first = await views();
      const later = await waitFor('every process ticked', async () => {
        const v = await views();
        return ['root', 'child', 'grandchild'].every((r) => v[r]![4]! > first[r]![4]!) ? v : undefined;
      });
      const [root, child, grandchild] = [later.root!, later.child!, later.grandchild!];
      // The root: init of its PID namespace, its session and group leader.
      expect({ mode, root: root.slice(0, 4) }).toEqual({ mode, root: [1, 0, 1, 1] });
      // The child: its own group, in the root's session.
      expect({ mode, child: child.slice(0, 4) }).toEqual({ mode, child: [view.childPid, 1, view.childPid, 1] });
      // The grandchild: a session (and group) of its own, the child its parent.
      expect({ mode, grandchild: grandchild.slice(1, 4) }).toEqual({ mode, grandchild: [view.childPid, grandchild[0], grandchild[0]] });
    }, shape);
    expect((await cluster.ferry(['stop', 'relations'])).code).toBe(0);
    await waitFor('no process of it left', async () => (await w.processes()).length === 0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'relations']);
    await w.remove();
  }
});

test('interval timers and POSIX timers move in every mode: one-shot ones still pending (nearer), periodic ones still firing', async () => {
  const w = await FixtureWorkload.create('timers.py');
  try {
    await launch('timers', w, []);
    let last = { itimer: 3600, once: 3600e9, fired: -1, child: -1 };
    await throughEveryMode('timers', w, async (view, mode) => {
      const child = Number(await w.file('child'));
      const now = { itimer: view.itimerReal.nextS, once: view.posixOnce.nextNs, fired: view.posixPeriodic.fired, child: view.childAlarms };
      expect({
        mode,
        intervals: [view.itimerReal.intervalS, view.posixPeriodic.intervalNs, view.posixOnce.intervalNs],
        pending: [now.itimer > 0, now.once > 0],
        nearer: [now.itimer < last.itimer, now.once < last.once],
        firing: [now.fired > last.fired, now.child > last.child],
      }).toEqual({ mode, intervals: [0, 10_000_000, 0], pending: [true, true], nearer: [true, true], firing: [true, true] });
      // The child's own count moves on as well (its periodic ITIMER_REAL).
      await waitFor('the child counting alarms', async () => Number(await w.file('child')) > child);
      last = now;
    }, { live: 2 });
    expect((await cluster.ferry(['stop', 'timers'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'timers']);
    await w.remove();
  }
});

test('process attributes move in every mode: working directory, umask, rlimits, nice value, scheduling policy, no_new_privs, parent-death signal, name, environment', async () => {
  const w = await FixtureWorkload.create('process-attrs.py');
  try {
    await launch('attrs', w, []);
    let cpus: number[] | undefined;
    await throughEveryMode('attrs', w, (view, mode) => {
      cpus ??= view.cpus;
      expect({ mode, ...view, counter: undefined }).toEqual({
        mode,
        counter: undefined,
        cwd: `${w.stateDir}/cwd`,
        umask: '0o27',
        nofile: [512, 1024],
        core: [0, 0],
        nice: 5,
        policy: 'batch',
        cpus,
        noNewPrivs: 1,
        deathSignal: 1, // SIGHUP
        comm: 'attrs-holder',
        env: 'still here',
      });
    });
    expect((await cluster.ferry(['stop', 'attrs'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'attrs']);
    await w.remove();
  }
});

test('a thread pinned to a CPU is refused before the freeze in every mode (CRIU would drop its affinity), the workload running on', async () => {
  const w = await FixtureWorkload.create('process-attrs.py');
  try {
    const before = await launch('pinned-cpu', w, ['--pin']);
    const pinnedTo = (await w.view(before.pid)).cpus;
    expect(pinnedTo).toHaveLength(1);
    for (const { mode, args } of MODES) {
      const refused = await cluster.ferry(['migrate', 'pinned-cpu', '--to', 'h2', ...args, '--json']);
      expect({ mode, state: refused.json?.state, code: refused.json?.error?.code, downtimeMs: refused.json?.downtimeMs }).toEqual({ mode, state: 'rolled-back', code: 'FAILED_PRECONDITION', downtimeMs: 0 });
      expect(refused.json.error.message).toMatch(new RegExp(`has threads pinned to CPUs \\(sched_setaffinity\\): pid \\d+ thread \\d+ on CPUs ${pinnedTo[0]}\\b`));
      const entry = await expectCarriesOn('pinned-cpu', w, 'h1');
      expect(entry.pid).toBe(before.pid);
      expect((await w.view(entry.pid)).cpus).toEqual(pinnedTo);
    }
    expect((await cluster.ferry(['stop', 'pinned-cpu'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'pinned-cpu']);
    await w.remove();
  }
});

test('Unix domain sockets move in every mode: socketpairs with queued bytes and datagrams, a listener in a local dir with a connection accepted and one waiting, an abstract listener', async () => {
  const w = await FixtureWorkload.create('unix-sockets.py');
  const sockDir = '/srv/unixsock';
  await dev.hostExec(CLUSTER, 'h1', ['mkdir', '-p', sockDir]);
  try {
    await launch('unixsock', w, [sockDir], ['--local-dir', sockDir]);
    await throughEveryMode('unixsock', w, (view, mode) => {
      expect({ mode, ...view, counter: undefined }).toEqual({
        mode,
        counter: undefined,
        streamQueued: 'thirteen byte',
        streamTalks: true,
        datagrams: ['first', 'second'],
        servedQueued: 'nine byte',
        backlogWaiting: true,
        listenerAccepts: true,
        abstractAccepts: true,
      });
    });
    expect((await cluster.ferry(['stop', 'unixsock'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'unixsock']);
    for (const host of ['h1', 'h2']) await dev.hostExec(CLUSTER, host, ['rm', '-rf', sockDir]).catch(() => undefined);
    await w.remove();
  }
});

test('SysV shared memory and semaphores (own IPC namespace) move in every mode, contents and values intact', async () => {
  const w = await FixtureWorkload.create('ipc-objects.py');
  try {
    await launch('sysv', w, ['--sysv']);
    await throughEveryMode('sysv', w, (view, mode) => {
      expect({ mode, shm: view.sysvShm, sem: view.sysvSem }).toEqual({ mode, shm: { patternOk: true, mappedCounter: view.counter }, sem: [5, 3] });
    });
    expect((await cluster.ferry(['stop', 'sysv'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'sysv']);
    await w.remove();
  }
});

test('a POSIX shared memory object (/dev/shm, mapped) in every mode', async () => {
  const w = await FixtureWorkload.create('ipc-objects.py');
  const object = `ferry-tclass-${process.pid}`;
  try {
    await launch('posixshm', w, ['--posix-shm', object]);
    await throughEveryMode('posixshm', w, (view, mode) => {
      expect({ mode, shm: view.posixShm }).toEqual({ mode, shm: { patternOk: true, mappedCounter: view.counter, readCounter: view.counter } });
    });
    expect((await cluster.ferry(['stop', 'posixshm'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'posixshm']);
    await rm(`/dev/shm/${object}`, { force: true });
    await w.remove();
  }
});

test('an armed periodic timerfd is refused before the freeze in every mode (CRIU would restore it disarmed), the workload running on', async () => {
  await expectPipeData();
  const w = await FixtureWorkload.create('fd-kinds.py');
  const watched = '/srv/periodic/watched';
  await dev.hostExec(CLUSTER, 'h1', ['mkdir', '-p', watched]);
  try {
    const before = await launch('periodic', w, [watched, '--periodic-timer'], ['--local-dir', '/srv/periodic']);
    for (const { mode, args } of MODES) {
      const refused = await cluster.ferry(['migrate', 'periodic', '--to', 'h2', ...args, '--json']);
      expect({ mode, state: refused.json?.state, code: refused.json?.error?.code, downtimeMs: refused.json?.downtimeMs }).toEqual({ mode, state: 'rolled-back', code: 'FAILED_PRECONDITION', downtimeMs: 0 });
      expect(refused.json.error.message).toMatch(/holds an armed periodic timerfd: timerfd every 10 ms \(pid \d+ fd \d+\).*criu#3162/);
      // Never frozen: the same process on h1, counting on, its timers as they were.
      const entry = await expectCarriesOn('periodic', w, 'h1');
      expect(entry.pid).toBe(before.pid);
      expect((await w.view(entry.pid)).memfd.patternOk).toBe(true);
    }
    expect((await cluster.ferry(['stop', 'periodic'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'periodic']);
    await dev.hostExec(CLUSTER, 'h1', ['rm', '-rf', '/srv/periodic']).catch(() => undefined);
    await w.remove();
  }
});

test('unlinked-but-open local files (at an offset, one sparse 2 GiB with 8 KiB written, one only mapped) move in every mode as ghost files, contents and offsets intact', async () => {
  const w = await FixtureWorkload.create('unlinked-files.py');
  const dir = await mkdtemp(join(tmpdir(), 'ferry-ghosts-'));
  try {
    // Every file on the machine's own (local) filesystem here, none on a cluster filesystem.
    let entry = await launch('ghosts', w, [join(dir, 'data'), dir, '1', '3']);
    expect(await w.verify(entry.pid)).toMatch(/^OK /);
    for (const { mode, to, args } of MODES) {
      const moved = await cluster.ferry(['migrate', 'ghosts', '--to', to, ...args, '--json']);
      expectMovedBy(mode, moved.json);
      const before = entry.pid;
      entry = await expectCarriesOn('ghosts', w, to);
      expect(entry.pid).not.toBe(before);
      expect({ mode, verdict: await w.verify(entry.pid) }).toEqual({ mode, verdict: expect.stringMatching(/^OK /) });
    }
    expect((await cluster.ferry(['stop', 'ghosts'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'ghosts']);
    await rm(dir, { recursive: true, force: true });
    await w.remove();
  }
});

test('unlinked-but-open files on a cluster filesystem (an fd at an offset, one only mapped) move in every mode by name, pinned, beside local ghost files (--host-root); in a root of its own they are refused before the freeze', async () => {
  const w = await FixtureWorkload.create('unlinked-files.py');
  const ownRoot = await FixtureWorkload.create('unlinked-files.py');
  const dir = await mkdtemp(join(tmpdir(), 'ferry-ghosts-'));
  const mountPoint = '/ferry-tclass-data';
  const sharedDir = dev.readClusterState(CLUSTER)!.layout.sharedDir;
  try {
    // In its own root: the target would reopen them on its own mount, outside the workload's namespace.
    const own = await launch('pinnedown', ownRoot, [`${mountPoint}/files`, dir, '8', '1'], ['--mount', `shared:${mountPoint}`]);
    const refused = await cluster.ferry(['migrate', 'pinnedown', '--to', 'h2', '--json']);
    expect({ state: refused.json?.state, code: refused.json?.error?.code, downtimeMs: refused.json?.downtimeMs }).toEqual({ state: 'rolled-back', code: 'FAILED_PRECONDITION', downtimeMs: 0 });
    expect(refused.json.error.message).toMatch(/unlinked-but-open files on a cluster filesystem: .*--host-root/);
    expect((await expectCarriesOn('pinnedown', ownRoot, 'h1')).pid).toBe(own.pid);
    expect((await cluster.ferry(['stop', 'pinnedown'])).code).toBe(0);
    await rm(join(sharedDir, 'files'), { recursive: true, force: true });

    let entry = await launch('pinned', w, [`${mountPoint}/files`, dir, '8', '1'], ['--mount', `shared:${mountPoint}`, '--host-root']);
    expect(await w.verify(entry.pid)).toMatch(/^OK /);
    for (const { mode, to, args } of MODES) {
      const moved = await cluster.ferry(['migrate', 'pinned', '--to', to, ...args, '--json']);
      expectMovedBy(mode, moved.json);
      // The 8 MiB on the cluster filesystem stayed on its server: only the local ghost files and memory travelled.
      expect({ mode, under8MiB: moved.json.bytesTransferred < 8 * 1024 * 1024 }).toEqual({ mode, under8MiB: true });
      const before = entry.pid;
      entry = await expectCarriesOn('pinned', w, to);
      expect(entry.pid).not.toBe(before);
      expect({ mode, verdict: await w.verify(entry.pid) }).toEqual({ mode, verdict: expect.stringMatching(/^OK /) });
    }
    expect((await cluster.ferry(['stop', 'pinned'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'pinnedown']);
    await cluster.ferry(['stop', 'pinned']);
    await rm(join(sharedDir, 'files'), { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    await w.remove();
    await ownRoot.remove();
  }
});

test('a FIFO holding unread data outside its local dirs is refused before the freeze in every mode (the target would refill the same FIFO, or lack it), the workload running on', async () => {
  await expectPipeData();
  const w = await FixtureWorkload.create('fd-kinds.py');
  const watched = '/srv/fifoelsewhere/watched';
  await dev.hostExec(CLUSTER, 'h1', ['mkdir', '-p', watched]);
  try {
    // In the state dir, on the machine's filesystem, which every dev host shares.
    const fifo = join(w.stateDir, 'fifo');
    const before = await launch('fifoelsewhere', w, [watched, '--fifo', fifo], ['--local-dir', '/srv/fifoelsewhere']);
    for (const { mode, args } of MODES) {
      const refused = await cluster.ferry(['migrate', 'fifoelsewhere', '--to', 'h2', ...args, '--json']);
      expect({ mode, state: refused.json?.state, code: refused.json?.error?.code, downtimeMs: refused.json?.downtimeMs }).toEqual({ mode, state: 'rolled-back', code: 'FAILED_PRECONDITION', downtimeMs: 0 });
      expect(refused.json.error.message).toContain(`FIFO holding unread data outside its local dirs: ${fifo} (pid `);
      const entry = await expectCarriesOn('fifoelsewhere', w, 'h1');
      expect(entry.pid).toBe(before.pid);
      // Its bytes wait for it, once.
      expect((await w.view(entry.pid)).fifo).toBe(22);
    }
    expect((await cluster.ferry(['stop', 'fifoelsewhere'])).code).toBe(0);
  } finally {
    // Stopped already when the test got to its end; else (a failed expectation) stopped here.
    await cluster.ferry(['stop', 'fifoelsewhere']);
    await dev.hostExec(CLUSTER, 'h1', ['rm', '-rf', '/srv/fifoelsewhere']).catch(() => undefined);
    await w.remove();
  }
});
