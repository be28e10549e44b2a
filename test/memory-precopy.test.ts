/**
 * Memory pre-copy (the default where both hosts can, on the streamed dump): the workload's memory
 * crosses while it runs, and the freeze sends only the pages that changed since, which the target
 * puts over the pre-copied ones. The workload keeps rewriting 16 MiB, a page every tick, so pages
 * change between the pass and the freeze; its self-check fails if any page came back from the
 * pass instead of the freeze. Over the direct path and through NATS, eager and lazy restores, a
 * child process beside it; and to and from a host that pre-copies nothing (FERRY_PRECOPY=off).
 * Real CRIU, NATS, Redis, namespace hosts.
 */
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload } from './helpers/workload';

jest.setTimeout(240_000);

const MIB = 1024 * 1024;
const MEMORY_MIB = 96;
let cluster: TestCluster;
let workload: CounterWorkload | undefined;

beforeAll(async () => {
  cluster = await startTestCluster('precopy', 217, {
    hosts: 3,
    agentEnvFor: (host): Record<string, string> => (host === 'h3' ? { FERRY_PRECOPY: 'off' } : {}),
  });
});

afterAll(async () => {
  await cluster?.stop();
  await workload?.remove();
});

test.each([
  // transport, restore, --precopy, to, pre-copied
  ['auto', undefined, undefined, 'h2', true],
  ['nats', 'eager', undefined, 'h1', true],
  ['direct', 'eager', undefined, 'h2', true],
  ['auto', undefined, undefined, 'h3', false],
  ['auto', undefined, undefined, 'h1', false],
  ['auto', 'lazy', 'off', 'h2', false],
  ['auto', 'lazy', 'auto', 'h1', true],
])('--transport %s --restore %s --precopy %s to %s (pre-copied: %s): memory intact, every changed page the frozen one, exactly one copy', async (transport, restore, precopy, to, precopied) => {
  if (workload === undefined) {
    workload = await CounterWorkload.create();
    const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'pc', '--json', '--', ...workload.argv(MEMORY_MIB, false, { churn: true })]);
    expect(run.code).toBe(0);
    await workload.advancesPast(20, 30_000);
  }
  const w = workload;
  const counterBefore = await w.counter();
  const res = await cluster.ferry(['migrate', 'pc', '--to', to, '--transport', transport, ...(restore ? ['--restore', restore] : []), ...(precopy ? ['--precopy', precopy] : []), '--json']);
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ workload: 'pc', to, state: 'succeeded', memory: 'stream' });
  if (precopied) {
    expect(res.json.phases.precopyMs).toBeGreaterThan(0);
    // The pass moved the memory; the freeze only what changed (the churned pages, the small images).
    expect(res.json.precopyBytes).toBeGreaterThan(MEMORY_MIB * MIB);
    expect(res.json.bytesTransferred - res.json.precopyBytes).toBeLessThan(24 * MIB);
  } else {
    expect(res.json.phases.precopyMs).toBeUndefined();
    expect(res.json.precopyBytes).toBeUndefined();
    expect(res.json.bytesTransferred).toBeGreaterThan(MEMORY_MIB * MIB);
  }
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.starts()).toBe(1);
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>;
  const entries = ps.filter((e) => e.name === 'pc');
  expect(entries).toHaveLength(1);
  expect(entries[0].host).toBe(to);
  expect(await w.runningCopies()).toEqual([entries[0].pid]);
  expect(await w.verifyMemory(entries[0].pid)).toBe('OK');
});

test('a workload with a child process: both processes pre-copied, both memories intact', async () => {
  const w = await CounterWorkload.create();
  try {
    expect((await cluster.ferry(['run', '--host', 'h1', '--name', 'pc2', '--json', '--', ...w.argv(64, true)])).code).toBe(0);
    await w.advancesPast(20, 30_000);
    const before = await w.counter();
    const res = await cluster.ferry(['migrate', 'pc2', '--to', 'h2', '--json']);
    expect(res.code).toBe(0);
    expect(res.json).toMatchObject({ state: 'succeeded', memory: 'stream' });
    expect(res.json.phases.precopyMs).toBeGreaterThan(0);
    expect(await w.advancesPast(before)).toBeGreaterThan(before);
    const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>;
    const entry = ps.find((e) => e.name === 'pc2')!;
    expect(entry.host).toBe('h2');
    expect(await w.verifyMemory(entry.pid)).toBe('OK');
    expect(await w.starts()).toBe(1);
  } finally {
    await cluster.ferry(['stop', 'pc2']).catch(() => undefined);
    await w.remove();
  }
});
