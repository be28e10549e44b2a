/**
 * Every workload has its own root (agent host/isolated-root.ts): its own mount namespace with its
 * own /proc, its PID namespace's, so a program that reads /proc for its own processes finds them
 * and `ps` inside lists only them, before a move and after each. Run as root it keeps the host's
 * user namespace, so every path moves it, post-copy included. What it keeps in its own /run (a
 * file, a listening socket) moves with it; the rest of the skeleton is read-only. `--host-root` opts out: the program
 * then sees the host's /proc, as before this existed.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { viewAfterSignal, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const FIXTURE = join(__dirname, 'fixtures', 'proc-view.py');
let cluster: TestCluster;
let dir: string;

beforeAll(async () => {
  cluster = await startTestCluster('towns', 224);
  dir = await mkdtemp('/tmp/ferry-own-root-test-');
  await copyFile(FIXTURE, join(dir, 'proc-view.py'));
});

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type View = {
  pid: number;
  pids: number[];
  init: string;
  child: number;
  childStatus: { name: string; ppid: number };
  ps: Array<{ pid: number; comm: string }>;
  count: number;
  run: { started: string | null; listenerAnswers: boolean; rootWrite: string } | null;
};

async function counter(name: string): Promise<number> {
  return Number(await readFile(join(dir, name), 'utf8').catch(() => '0')) || 0;
}

async function where(name: string): Promise<{ host: string; pid: number; state: string; ownRoot?: boolean }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string; ownRoot?: boolean }>).find((w) => w.name === name)!;
}

/** The workload's own view, asked by signal (the root of its tree is the program itself). */
const view = (pid: number): Promise<View> => viewAfterSignal<View>(pid, dir);

async function expectOwnView(pid: number): Promise<void> {
  const v = await view(pid);
  // pid 1 is the program; /proc lists it and its child only; the child's /proc entry is its child's.
  expect(v.pid).toBe(1);
  expect(v.init).toBe('/usr/bin/python3');
  expect(v.pids).toEqual([1, v.child].sort((a, b) => a - b));
  expect(v.childStatus).toEqual({ name: 'python3', ppid: 1 });
  // ps inside lists the program, its child and ps itself: nothing of the host.
  const listed = v.ps.filter((p) => p.comm !== 'ps');
  expect(listed).toEqual([{ pid: 1, comm: 'python3' }, { pid: v.child, comm: 'python3' }]);
  expect(v.ps).toHaveLength(3);
}

test('a workload run as root has its own /proc, kept by every path it moves by, post-copy included', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'ownproc', '--cwd', dir, '--json', '--', '/usr/bin/python3', join(dir, 'proc-view.py'), dir, '--run-state']);
  expect(run.code).toBe(0);
  expect(run.json).toMatchObject({ host: 'h1', ownRoot: true });
  expect(run.json.user).toBeUndefined();
  await waitFor('counters', async () => (await counter('counter')) > 10 && (await counter('child-counter')) > 10, 30_000);
  await expectOwnView(run.json.pid);
  // Its own /run: what it wrote there at the start, and its listening socket there; the rest of its
  // root (the skeleton, which would not move) refuses writes.
  const runState = { started: `started as 1`, listenerAnswers: true, rootWrite: 'EROFS' };
  expect((await view(run.json.pid)).run).toEqual(runState);
  // Nothing of it in the host's /run.
  expect(existsSync('/run/proc-view')).toBe(false);

  const moves = [
    ['h2', []],
    ['h1', ['--transport', 'nats']],
    ['h2', ['--transport', 'direct']],
    ['h1', ['--restore', 'post-copy']],
    ['h2', ['--transport', 'page-tunnel']],
  ] as const;
  for (const [to, extra] of moves) {
    const [before, childBefore] = [await counter('counter'), await counter('child-counter')];
    const res = await cluster.ferry(['migrate', 'ownproc', '--to', to, ...extra, '--json']);
    expect({ to, extra, state: res.json?.state, error: res.json?.error }).toEqual({ to, extra, state: 'succeeded', error: undefined });
    const now = await where('ownproc');
    expect(now).toMatchObject({ host: to, state: 'running', ownRoot: true });
    await waitFor('counters move on', async () => (await counter('counter')) > before + 5 && (await counter('child-counter')) > childBefore + 5, 15_000);
    // Its memory moved: the count it holds carried on from before the move; so did its /run.
    const v = await view(now.pid);
    expect(v.count).toBeGreaterThanOrEqual(before);
    expect({ to, extra, run: v.run }).toEqual({ to, extra, run: runState });
    await expectOwnView(now.pid);
  }
  expect((await readFile(join(dir, 'starts'), 'utf8')).split('\n').filter(Boolean)).toHaveLength(1);
  expect((await cluster.ferry(['stop', 'ownproc'])).code).toBe(0);
});

test('--host-root: the workload shares the host mount namespace and sees the host /proc, moved or not', async () => {
  for (const file of ['starts', 'counter']) await rm(join(dir, file), { force: true });
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'hostproc', '--host-root', '--cwd', dir, '--json', '--', '/usr/bin/python3', join(dir, 'proc-view.py'), dir]);
  expect(run.code).toBe(0);
  expect(run.json.ownRoot).toBeUndefined();
  const expectHostView = async (pid: number) => {
    const v = await view(pid);
    expect(v.pid).toBe(1);
    // /proc/1 is the machine's init, not the program, and the host's processes are listed.
    expect(v.init).not.toBe('/usr/bin/python3');
    expect(v.pids.length).toBeGreaterThan(10);
    expect(v.ps.length).toBeGreaterThan(10);
  };
  // Its SIGUSR1 handler is in place once it counts (a signal before it would end the program).
  await waitFor('counter', async () => (await counter('counter')) > 2, 30_000);
  await expectHostView(run.json.pid);
  const res = await cluster.ferry(['migrate', 'hostproc', '--to', 'h2', '--json']);
  expect(res.json).toMatchObject({ state: 'succeeded' });
  const now = await where('hostproc');
  expect(now).toMatchObject({ host: 'h2', state: 'running' });
  expect(now.ownRoot).toBe(false);
  await expectHostView(now.pid);
  expect((await cluster.ferry(['stop', 'hostproc'])).code).toBe(0);
});

test('--host-root with --user, and a working directory outside its own root, are refused with a clear error', async () => {
  const both = await cluster.ferry(['run', '--host', 'h1', '--name', 'both', '--host-root', '--user', 'nobody', '--cwd', dir, '--', '/bin/true']);
  expect(both.code).not.toBe(0);
  expect(both.stderr).toMatch(/--host-root and --user do not go together/);
  // Refused before anything is set up on the host: its service address is not left behind.
  const outside = await cluster.ferry(['run', '--host', 'h1', '--name', 'inrun', '--address', '198.18.224.77/24', '--cwd', '/run', '--', '/bin/true']);
  expect(outside.code).not.toBe(0);
  expect(outside.stderr).toMatch(/would not exist in its own root.*--host-root/);
  expect((await dev.hostExec('towns', 'h1', ['ip', '-4', 'addr'])).stdout).not.toContain('198.18.224.77');
});
