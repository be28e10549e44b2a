/**
 * Each image data path (`ferry migrate --transport`) and restore mode (`--restore`) moves a live
 * workload intact: ferry's chunk stream over a direct TCP connection between the agents, the same
 * stream through nats-server, CRIU's page server for the memory pages, ferry's page tunnel (CRIU's
 * page-server protocol sealed natively by the agents), the streamed dump (the default: the pages
 * sealed onto the direct connection while `criu dump --stream` runs); restores eager, lazy
 * (the default where the probe allows it) and post-copy (the memory fetched from the source after
 * the workload resumed). Real CRIU, NATS, Redis, two namespace hosts.
 */
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload } from './helpers/workload';

jest.setTimeout(240_000);

const MIB = 1024 * 1024;
let cluster: TestCluster;
let workload: CounterWorkload | undefined;

beforeAll(async () => {
  // h2 as a post-copy source rewrites a full dump (FERRY_LAZY_DUMP=off); h1 and h3 use CRIU's lazy dump.
  // h3 has neither a streamed dump nor a page tunnel (FERRY_STREAM_DUMP=off, FERRY_PAGE_TUNNEL=off): to
  // and from it, auto takes CRIU's TLS page server (pre-copy) and CRIU to CRIU over mutual TLS (post-copy).
  cluster = await startTestCluster('txport', 241, {
    hosts: 3,
    agentEnvFor: (host): Record<string, string> => (host === 'h2' ? { FERRY_LAZY_DUMP: 'off' } : host === 'h3' ? { FERRY_PAGE_TUNNEL: 'off', FERRY_STREAM_DUMP: 'off' } : {}),
  });
});

afterAll(async () => {
  await cluster?.stop();
  await workload?.remove();
});

test.each([
  // transport asked, restore asked, to, the transport and the memory path the result must report
  ['page-server', 'lazy', 'h2', 'page-server', 'page-server'],
  ['page-tunnel', 'eager', 'h1', 'page-tunnel', 'page-tunnel'],
  ['nats', 'eager', 'h2', 'nats', 'stream'],
  ['direct', 'lazy', 'h1', 'direct', 'stream'],
  ['auto', undefined, 'h2', 'direct', 'stream'],
  ['auto', 'eager', 'h1', 'direct', 'stream'],
  // From h1, CRIU's lazy dump, its pages through the page tunnel to h2's lazy-pages daemon; then
  // through NATS via both agents; from h2, the rewritten full dump served by its agent.
  ['auto', 'post-copy', 'h2', 'page-tunnel', 'lazy-dump'],
  ['nats', 'post-copy', 'h1', 'nats', 'lazy-rewrite'],
  ['nats', 'post-copy', 'h2', 'nats', 'lazy-dump'],
  // Without the stream and the tunnel at one end: CRIU's TLS page server, and post-copy CRIU to CRIU over TLS.
  ['auto', undefined, 'h3', 'page-server', 'page-server'],
  ['auto', 'post-copy', 'h1', 'direct', 'lazy-dump'],
  // h3 has no streamer: the plain dump, then its image over NATS, there and back.
  ['nats', 'eager', 'h3', 'nats', 'image'],
  ['nats', 'lazy', 'h1', 'nats', 'image'],
])('--transport %s --restore %s migrates the workload to %s (%s, memory %s) with memory intact, counter continuing, exactly one copy', async (transport, restore, to, expectedTransport, expectedMemory) => {
  if (workload === undefined) {
    workload = await CounterWorkload.create();
    const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'tx', '--json', '--', ...workload.argv(48)]);
    expect(run.code).toBe(0);
    await workload.advancesPast(20, 30_000);
  }
  const w = workload;
  const counterBefore = await w.counter();
  const res = await cluster.ferry(['migrate', 'tx', '--to', to, '--transport', transport, ...(restore ? ['--restore', restore] : []), '--json']);
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  // auto: where both probes streamed a dump through their agent, the streamed dump; this kernel has userfaultfd: lazy.
  expect(res.json).toMatchObject({ workload: 'tx', to, state: 'succeeded', transport: expectedTransport, memory: expectedMemory, restore: restore ?? 'lazy' });
  expect(res.json.bytesTransferred).toBeGreaterThan(48 * MIB);
  // Lazy and post-copy restores say how long after the resume the memory was all in place.
  if (restore !== 'eager') expect(res.json.phases.pullMs).toBeGreaterThan(0);
  else expect(res.json.phases.pullMs).toBeUndefined();
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.starts()).toBe(1);
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>;
  const entries = ps.filter((e) => e.name === 'tx');
  expect(entries).toHaveLength(1);
  expect(entries[0].host).toBe(to);
  expect(await w.runningCopies()).toEqual([entries[0].pid]);
  expect(await w.verifyMemory(entries[0].pid)).toBe('OK');
});

test.each(['page-server', 'page-tunnel'])('post-copy with the %s transport is refused before anything is frozen', async (transport) => {
  const res = await cluster.ferry(['migrate', 'tx', '--to', 'h2', '--transport', transport, '--restore', 'post-copy', '--json']);
  expect(res.code).toBe(2);
  expect(res.json.error.code).toBe('INVALID_ARGUMENT');
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; state: string }>;
  expect(ps.filter((e) => e.name === 'tx')).toEqual([expect.objectContaining({ host: 'h1', state: 'running' })]);
});

test('an unknown transport is refused with INVALID_ARGUMENT and the workload keeps running where it was', async () => {
  const res = await cluster.ferry(['migrate', 'tx', '--to', 'h2', '--transport', 'carrier-pigeon', '--json']);
  expect(res.code).toBe(2);
  expect(res.json.error.code).toBe('INVALID_ARGUMENT');
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; state: string }>;
  expect(ps.filter((e) => e.name === 'tx')).toEqual([expect.objectContaining({ host: 'h1', state: 'running' })]);
});
