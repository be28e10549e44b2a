/**
 * Live migration end to end, against real CRIU, nats-server, Redis and two namespace hosts,
 * driven through the real `ferry` CLI.
 */
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, sleep } from './helpers/workload';

jest.setTimeout(240_000);

let cluster: TestCluster;
const workloads: CounterWorkload[] = [];

beforeAll(async () => {
  cluster = await startTestCluster('tmig', 201);
});

afterAll(async () => {
  await cluster?.stop();
  for (const w of workloads) await w.remove();
});

async function launch(name: string, mib: number, children = false, options: { sysvShm?: boolean } = {}): Promise<CounterWorkload> {
  const w = await CounterWorkload.create();
  workloads.push(w);
  const res = await cluster.ferry(['run', '--host', 'h1', '--name', name, '--json', '--', ...w.argv(mib, children, options)]);
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ name, host: 'h1', state: 'running' });
  await w.advancesPast(20, 30_000);
  return w;
}

async function psEntry(name: string) {
  const ps = await cluster.ferry(['ps', '--json']);
  expect(ps.code).toBe(0);
  return (ps.json as Array<{ name: string; host: string; state: string; pid: number; rssBytes: number }>).filter((w) => w.name === name);
}

test('a 64 MiB workload migrates h1 -> h2 -> h1 with memory intact, counter continuing, exactly one copy', async () => {
  const w = await launch('counter', 64);
  const [before] = await psEntry('counter');
  expect(before).toMatchObject({ host: 'h1', state: 'running' });
  expect(before.rssBytes).toBeGreaterThan(64 * 1024 * 1024);
  expect(await w.verifyMemory(before.pid)).toBe('OK');

  let pid = before.pid;
  for (const to of ['h2', 'h1']) {
    const counterBefore = await w.counter();
    const res = await cluster.ferry(['migrate', 'counter', '--to', to, '--json']);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const m = res.json;
    // The default here: the streamed dump (both probes allow it), the memory sealed with the migration's key onto the direct connection.
    expect(m).toMatchObject({ workload: 'counter', to, state: 'succeeded', transport: 'direct', memory: 'stream' });
    expect(m.bytesTransferred).toBeGreaterThan(64 * 1024 * 1024);
    expect(m.downtimeMs).toBeGreaterThan(0);
    expect(m.totalMs).toBeGreaterThanOrEqual(m.downtimeMs);
    expect(m.phases.dumpMs).toBeGreaterThan(0);
    expect(m.phases.restoreMs).toBeGreaterThan(0);

    // Continued, not restarted: the counter goes on from where it was and no second start happened.
    const after = await w.advancesPast(counterBefore);
    expect(after).toBeGreaterThan(counterBefore);
    expect(await w.starts()).toBe(1);
    const entries = await psEntry('counter');
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ host: to, state: 'running' });
    expect(entries[0].pid).not.toBe(pid);
    pid = entries[0].pid;
    expect(await w.runningCopies()).toEqual([pid]);
    expect(await w.verifyMemory(pid)).toBe('OK');
  }

  // Each agent serves its own metrics on its host address: h2 restored once and dumped once.
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; address: string }>;
  const h2 = hosts.find((h) => h.name === 'h2')!;
  const agentMetrics = await (await fetch(`http://${h2.address}:9465/metrics`)).text();
  expect(agentMetrics).toContain('ferry_agent_criu_restore_duration_seconds_count{host="h2"} 1');
  expect(agentMetrics).toContain('ferry_agent_criu_dump_duration_seconds_count{host="h2"} 1');
  expect(agentMetrics).toMatch(/ferry_agent_transfer_bytes_total\{direction="received",host="h2"\} \d{8,}/);

  const status = await cluster.ferry(['status', '--json']);
  expect(status.code).toBe(0);
  expect(status.json.filter((m: { workload: string; state: string }) => m.workload === 'counter' && m.state === 'succeeded')).toHaveLength(2);
  expect((await cluster.ferry(['stop', 'counter'])).code).toBe(0);
});

test('a parent and child joined by a pipe migrate together', async () => {
  const w = await launch('family', 8, true);
  const counterBefore = await w.counter();
  const res = await cluster.ferry(['migrate', 'family', '--to', 'h2', '--json']);
  expect(res.code).toBe(0);
  expect(res.json.state).toBe('succeeded');
  // The counter comes from the child through the pipe: it moving on proves both and the pipe survived.
  await w.advancesPast(counterBefore + 50);
  expect(await w.starts()).toBe(1);
  const [entry] = await psEntry('family');
  expect(entry.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect((await cluster.ferry(['stop', 'family'])).code).toBe(0);
});

test('post-copy: a parent and child joined by a pipe come back together, memory intact', async () => {
  const w = await launch('family2', 24, true);
  const counterBefore = await w.counter();
  const res = await cluster.ferry(['migrate', 'family2', '--to', 'h2', '--restore', 'post-copy', '--json']);
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ state: 'succeeded', restore: 'post-copy' });
  await w.advancesPast(counterBefore + 50);
  expect(await w.starts()).toBe(1);
  const [entry] = await psEntry('family2');
  expect(entry.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');
  expect((await cluster.ferry(['stop', 'family2'])).code).toBe(0);
});

test('SysV shared memory moves by the default path (the streamed dump) and back by the page tunnel, its content intact', async () => {
  // CRIU's TLS page server failed this ("Decryption has failed"); the default must carry it.
  const w = await launch('sysv', 16, false, { sysvShm: true });
  for (const [to, transport, memory] of [
    ['h2', 'auto', 'stream'],
    ['h1', 'page-tunnel', 'page-tunnel'],
  ]) {
    const counterBefore = await w.counter();
    const res = await cluster.ferry(['migrate', 'sysv', '--to', to!, '--transport', transport!, '--json']);
    expect(res.stderr).toBe('');
    expect(res.json).toMatchObject({ state: 'succeeded', memory });
    await w.advancesPast(counterBefore);
    const [entry] = await psEntry('sysv');
    expect(entry.host).toBe(to);
    expect(await w.runningCopies()).toEqual([entry.pid]);
    // Its heap and the segment's 8 MiB, both re-hashed by the workload itself.
    expect(await w.verifyMemory(entry.pid)).toBe('OK');
  }
  expect(await w.starts()).toBe(1);
  expect((await cluster.ferry(['stop', 'sysv'])).code).toBe(0);
});

test('a migration to an unknown host is refused with NOT_FOUND and the workload keeps running', async () => {
  const w = await launch('stay', 4);
  const res = await cluster.ferry(['migrate', 'stay', '--to', 'h9', '--json']);
  expect(res.code).toBe(3);
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.error.code).toBe('NOT_FOUND');
  const c = await w.counter();
  await w.advancesPast(c);
  const [entry] = await psEntry('stay');
  expect(entry).toMatchObject({ host: 'h1', state: 'running' });
  expect((await cluster.ferry(['stop', 'stay'])).code).toBe(0);
});

test('an unknown workload is NOT_FOUND', async () => {
  const res = await cluster.ferry(['migrate', 'nope', '--to', 'h2', '--json']);
  expect(res.code).toBe(3);
  expect(res.json.error.code).toBe('NOT_FOUND');
  await sleep(0);
});
