/**
 * A `--user` workload restores in its own user namespace, where CRIU's restorer makes the
 * userfaultfd a lazy restore needs: refused by the kernel unless vm.unprivileged_userfaultfd is 1
 * (0 on Debian: test/user-workloads.test.ts checks the refusal). On a host that allows it, the
 * agent's probe says so (criu.unprivilegedUserfaultfd) and the workload moves lazily and by
 * post-copy like any other. This file turns the sysctl on for its own cluster and back after.
 */
import { chmod, copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { allowUnprivilegedUserfaultfd, startTestCluster, type TestCluster } from './helpers/cluster';
import { viewAfterSignal, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const FIXTURE = join(__dirname, 'fixtures', 'user-counter.py');
const NOBODY_UID = 65534;
let cluster: TestCluster;
let dir: string;
let restoreSysctl: (() => Promise<void>) | undefined;

beforeAll(async () => {
  restoreSysctl = await allowUnprivilegedUserfaultfd();
  cluster = await startTestCluster('tuserlazy', 226);
  dir = await mkdtemp('/tmp/ferry-user-lazy-test-');
  await chmod(dir, 0o777);
  await copyFile(FIXTURE, join(dir, 'user-counter.py'));
});

afterAll(async () => {
  await cluster?.stop();
  await restoreSysctl?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function counter(): Promise<number> {
  return Number(await readFile(join(dir, 'counter'), 'utf8').catch(() => '0')) || 0;
}

async function where(name: string): Promise<{ host: string; pid: number; state: string }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string }>).find((w) => w.name === name)!;
}

const view = (pid: number) => viewAfterSignal<{ uid: number; pids: number[]; init: string; count: number }>(pid, dir);

test('with vm.unprivileged_userfaultfd=1 a workload run as nobody moves lazily and by post-copy, still nobody, its own /proc, started once', async () => {
  const hosts = await cluster.ferry(['hosts', '--json']);
  for (const h of hosts.json as Array<{ criu: { unprivilegedUserfaultfd: boolean } }>) expect(h.criu.unprivilegedUserfaultfd).toBe(true);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'lazynobody', '--user', 'nobody', '--cwd', dir, '--json', '--', '/usr/bin/python3', join(dir, 'user-counter.py'), dir]);
  expect(run.code).toBe(0);
  await waitFor('counter', async () => (await counter()) > 10, 30_000);
  for (const [to, extra, restore] of [['h2', [], 'lazy'], ['h1', ['--restore', 'post-copy'], 'post-copy'], ['h2', ['--restore', 'post-copy', '--transport', 'nats'], 'post-copy']] as const) {
    const before = await counter();
    const res = await cluster.ferry(['migrate', 'lazynobody', '--to', to, ...extra, '--json']);
    expect({ to, state: res.json?.state, restore: res.json?.restore, error: res.json?.error }).toEqual({ to, state: 'succeeded', restore, error: undefined });
    const now = await where('lazynobody');
    expect(now).toMatchObject({ host: to, state: 'running' });
    await waitFor('counter moves on', async () => (await counter()) > before + 5, 15_000);
    const v = await view(now.pid);
    expect(v).toMatchObject({ uid: NOBODY_UID, pids: [1], init: '/usr/bin/python3' });
    expect(v.count).toBeGreaterThanOrEqual(before);
  }
  expect((await readFile(join(dir, 'starts'), 'utf8')).split('\n').filter(Boolean)).toHaveLength(1);
  expect((await cluster.ferry(['stop', 'lazynobody'])).code).toBe(0);
});
