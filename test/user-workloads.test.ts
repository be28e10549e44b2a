/**
 * Workloads run as another user (`ferry run --user`): in a user namespace the agent owns, with
 * their own mount namespace, /proc and root (agent host/isolated-root.ts). Root lacks
 * CAP_SYS_RESOURCE on this machine kind, so without the namespace CRIU cannot dump a non-root
 * process at all. Each move checks the program's own view: its uid, that its /proc lists only its
 * own processes (pid 1 is itself), and that its counter carried on, started once.
 */
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { viewAfterSignal, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const FIXTURE = join(__dirname, 'fixtures', 'user-counter.py');
const NOBODY_UID = 65534;
let cluster: TestCluster;
let dir: string;

beforeAll(async () => {
  cluster = await startTestCluster('tuser', 250);
  // Under /tmp, which an isolated workload sees; writable by the user it runs as.
  dir = await mkdtemp('/tmp/ferry-user-test-');
  await chmod(dir, 0o777);
  // The program too must be in its root (the repo is not).
  await copyFile(FIXTURE, join(dir, 'user-counter.py'));
});

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type View = { uid: number; gid: number; pids: number[]; init: string; count: number };

async function counter(): Promise<number> {
  return Number(await readFile(join(dir, 'counter'), 'utf8').catch(() => '0')) || 0;
}

async function where(name: string): Promise<{ host: string; pid: number; state: string }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string }>).find((w) => w.name === name)!;
}

/** The workload's own view, asked by signal (the root of its tree is the program itself). */
const view = (pid: number): Promise<View> => viewAfterSignal<View>(pid, dir);

async function expectOwnView(pid: number): Promise<void> {
  const v = await view(pid);
  expect(v.uid).toBe(NOBODY_UID);
  // Its own /proc: pid 1 is the program itself, and no host process is listed.
  expect(v.init).toBe('/usr/bin/python3');
  expect(v.pids).toEqual([1]);
  // The host sees it as nobody too: ids map 1:1.
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  expect(status).toMatch(new RegExp(`^Uid:\\s+${NOBODY_UID}\\s`, 'm'));
}

test('a workload run as nobody, with its own /proc, moves by every path and back, its state intact and started once', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'asnobody', '--user', 'nobody', '--cwd', dir, '--json', '--', '/usr/bin/python3', join(dir, 'user-counter.py'), dir]);
  expect(run.code).toBe(0);
  expect(run.json).toMatchObject({ host: 'h1', user: { name: 'nobody', uid: NOBODY_UID } });
  await waitFor('counter', async () => (await counter()) > 10, 30_000);
  await expectOwnView(run.json.pid);

  let host = 'h1';
  for (const [to, extra] of [['h2', []], ['h1', ['--transport', 'nats']], ['h2', ['--transport', 'direct']], ['h1', ['--transport', 'page-tunnel']]] as const) {
    const before = await counter();
    const res = await cluster.ferry(['migrate', 'asnobody', '--to', to, ...extra, '--json']);
    expect({ to, extra, state: res.json?.state, error: res.json?.error }).toEqual({ to, extra, state: 'succeeded', error: undefined });
    const now = await where('asnobody');
    expect(now).toMatchObject({ host: to, state: 'running' });
    host = to;
    await waitFor('counter moves on', async () => (await counter()) > before + 5, 15_000);
    const v = await view(now.pid);
    // Its memory moved: the count it holds carried on from before the move.
    expect(v.count).toBeGreaterThanOrEqual(before);
    await expectOwnView(now.pid);
  }
  // Post-copy (and a lazy restore) would restore in its user namespace, where the kernel refuses
  // CRIU's userfaultfd: refused before anything is frozen, with the reason and what to do.
  const postCopy = await cluster.ferry(['migrate', 'asnobody', '--to', 'h2', '--restore', 'post-copy', '--json']);
  expect(postCopy.json.error).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/--user .*userfaultfd.*--restore eager/) });
  expect(await where('asnobody')).toMatchObject({ host: 'h1', state: 'running' });
  await expectOwnView((await where('asnobody')).pid);
  expect((await readFile(join(dir, 'starts'), 'utf8')).split('\n').filter(Boolean)).toHaveLength(1);
  expect(host).toBe('h1');
  expect((await cluster.ferry(['stop', 'asnobody'])).code).toBe(0);
});

test('--user is refused with a clear error for an unknown user or a working directory outside its root', async () => {
  const unknown = await cluster.ferry(['run', '--host', 'h1', '--name', 'nouser', '--user', 'no-such-user', '--cwd', dir, '--', '/bin/true']);
  expect(unknown.code).not.toBe(0);
  expect(unknown.stderr).toMatch(/no user no-such-user/);
  const outside = await cluster.ferry(['run', '--host', 'h1', '--name', 'nocwd', '--user', 'nobody', '--cwd', '/run', '--', '/bin/true']);
  expect(outside.code).not.toBe(0);
  expect(outside.stderr).toMatch(/would not exist in its own root/);
});

test('a workload run as nobody on a cluster filesystem (sshfs, bound into its root) moves and back, counting on in the same files', async () => {
  const mountPoint = '/ferry-tuser-data';
  const sharedDir = dev.readClusterState('tuser')!.layout.sharedDir;
  const data = join(mountPoint, 'counting');
  const fromHere = join(sharedDir, 'counting');
  await mkdir(fromHere, { recursive: true, mode: 0o777 });
  await chmod(fromHere, 0o777);
  await copyFile(FIXTURE, join(fromHere, 'user-counter.py'));
  const count = async () => Number(await readFile(join(fromHere, 'counter'), 'utf8').catch(() => '0')) || 0;
  try {
    const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'nobodyfs', '--user', 'nobody', '--mount', `shared:${mountPoint}`, '--cwd', '/tmp', '--json', '--', '/usr/bin/python3', join(data, 'user-counter.py'), data]);
    expect(run.code).toBe(0);
    await waitFor('counter on the cluster filesystem', async () => (await count()) > 10, 30_000);
    for (const [to, extra] of [['h2', []], ['h1', ['--transport', 'nats']]] as const) {
      const before = await count();
      const res = await cluster.ferry(['migrate', 'nobodyfs', '--to', to, ...extra, '--json']);
      expect({ to, state: res.json?.state, error: res.json?.error }).toEqual({ to, state: 'succeeded', error: undefined });
      expect(await where('nobodyfs')).toMatchObject({ host: to, state: 'running' });
      await waitFor('counter moves on', async () => (await count()) > before + 5, 15_000);
      const status = await readFile(`/proc/${(await where('nobodyfs')).pid}/status`, 'utf8');
      expect(status).toMatch(new RegExp(`^Uid:\\s+${NOBODY_UID}\\s`, 'm'));
    }
    expect((await readFile(join(fromHere, 'starts'), 'utf8')).split('\n').filter(Boolean)).toHaveLength(1);
    expect((await cluster.ferry(['stop', 'nobodyfs'])).code).toBe(0);
  } finally {
    await cluster.ferry(['stop', 'nobodyfs']);
    await rm(fromHere, { recursive: true, force: true });
  }
});
