/**
 * Cluster operations: cordon, placement (`migrate` without `--to`), CPU pre-flight, idempotent
 * and conflicting requests, and drain — against real CRIU, NATS, Redis and three namespace hosts.
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoordVerb, decode, requestCoordVerb, subjects, type FerryError } from '@ferry/protocol';
import { expectIntactOn as expectIntact, launchCounter } from './helpers/checks';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload } from './helpers/workload';

jest.setTimeout(300_000);

const CLUSTER = 'tdrain';
// CRIU runs with a clean environment, so the wrapper finds its trigger next to itself.
const WRAPPER_DIR = mkdtempSync(join(tmpdir(), 'ferry-criu-cpu-'));
const CRIU_WRAPPER = join(WRAPPER_DIR, 'criu');
const CPU_MISMATCH_TRIGGER = join(WRAPPER_DIR, 'cpu-mismatch');
copyFileSync(join(REPO, 'test/fixtures/criu-cpu-mismatch.sh'), CRIU_WRAPPER);

let cluster: TestCluster;
const workloads = new Map<string, CounterWorkload>();

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 233, {
    hosts: 3,
    agentEnvFor: (host): Record<string, string> => (host === 'h3' ? { FERRY_CRIU_PATH: CRIU_WRAPPER } : {}),
    // One migration into any host at a time: a drain of three must queue.
    coordinatorEnv: { FERRY_MAX_MIGRATIONS_PER_SOURCE: '2', FERRY_MAX_MIGRATIONS_PER_TARGET: '1' },
  });
});

afterAll(async () => {
  await cluster?.stop();
  await rm(WRAPPER_DIR, { recursive: true, force: true });
  for (const w of workloads.values()) await w.remove();
});

async function launch(name: string, host: string, mib = 4): Promise<CounterWorkload> {
  const w = await launchCounter(cluster, name, host, mib);
  workloads.set(name, w);
  return w;
}

/** Runs on `host`, unfrozen, counter moving, started once, exactly one copy, memory intact. */
async function expectIntactOn(name: string, host: string): Promise<void> {
  await expectIntact(cluster, workloads.get(name)!, name, host);
}

async function hosts(): Promise<Array<{ name: string; cordoned: boolean; workloadCount: number }>> {
  return (await cluster.ferry(['hosts', '--json'])).json;
}

test('cordon shows in hosts, keeps placement and explicit migrations away; uncordon undoes it', async () => {
  await launch('placed', 'h1');
  const c = await cluster.ferry(['cordon', 'h3', '--json']);
  expect(c.code).toBe(0);
  expect(c.json).toMatchObject({ name: 'h3', cordoned: true });
  expect((await hosts()).find((h) => h.name === 'h3')?.cordoned).toBe(true);

  // Explicit target that is cordoned: refused by the pre-flight, nothing changes.
  const refused = await cluster.ferry(['migrate', 'placed', '--to', 'h3', '--json']);
  expect(refused.code).toBe(4);
  expect(refused.json).toMatchObject({ state: 'rolled-back', error: { code: 'FAILED_PRECONDITION' } });
  expect(refused.json.error.message).toMatch(/cordoned/);
  await expectIntactOn('placed', 'h1');

  // No target: placement skips the source and the cordoned host, and says so.
  const placed = await cluster.ferry(['migrate', 'placed', '--json']);
  expect(placed.code).toBe(0);
  expect(placed.json).toMatchObject({ state: 'succeeded', from: 'h1', to: 'h2', placement: { host: 'h2' } });
  expect(placed.json.placement.reason).toMatch(/cordoned: h3/);
  await expectIntactOn('placed', 'h2');

  const u = await cluster.ferry(['uncordon', 'h3', '--json']);
  expect(u.json).toMatchObject({ name: 'h3', cordoned: false });
  expect((await cluster.ferry(['cordon', 'nosuchhost'])).code).toBe(3);
  expect((await cluster.ferry(['stop', 'placed'])).code).toBe(0);
});

test('a CPU the source image does not fit fails the pre-flight: nothing is frozen, nothing changes', async () => {
  await launch('cpucheck', 'h1');
  await writeFile(CPU_MISMATCH_TRIGGER, '');
  try {
    const res = await cluster.ferry(['migrate', 'cpucheck', '--to', 'h3', '--json']);
    expect(res.code).toBe(4);
    expect(res.json.state).toBe('rolled-back');
    expect(res.json.error.code).toBe('FAILED_PRECONDITION');
    expect(res.json.error.message).toMatch(/CPU of h3 is not compatible.*not supported on this host/s);
    // Failed before the freeze: no downtime, no dump, no bytes sent.
    expect(res.json.downtimeMs).toBe(0);
    expect(res.json.phases.dumpMs).toBe(0);
    expect(res.json.bytesTransferred).toBe(0);
  } finally {
    await rm(CPU_MISMATCH_TRIGGER, { force: true });
  }
  await expectIntactOn('cpucheck', 'h1');
  const ok = await cluster.ferry(['migrate', 'cpucheck', '--to', 'h3', '--json']);
  expect(ok.json.state).toBe('succeeded');
  await expectIntactOn('cpucheck', 'h3');
  expect((await cluster.ferry(['stop', 'cpucheck'])).code).toBe(0);
});

test('a retried request id returns the first migration; a concurrent second migration gets CONFLICT', async () => {
  await launch('idem', 'h1', 32);
  // The second request is sent the moment the first reports its pre-flight (lock held by then).
  let fireSecond: () => void = () => undefined;
  const firstRunning = new Promise<void>((r) => (fireSecond = r));
  const sub = cluster.nc.subscribe(subjects.event('migration'), {
    callback: (_e, msg) => {
      const ev = decode(msg.data) as { workload: string; step: string };
      if (ev.workload === 'idem' && ev.step === 'preflight') fireSecond();
    },
  });
  // The second asks the coordinator directly (no CLI start-up delay) so it lands mid-migration.
  const secondReply = firstRunning.then(() =>
    requestCoordVerb(cluster.nc, CoordVerb.MIGRATE, { workload: 'idem', to: 'h3', requestId: 'req-idem-2' }, { timeoutMs: 60_000 }).then(
      () => null,
      (err: unknown) => err as FerryError,
    ),
  );
  const first = await cluster.ferry(['migrate', 'idem', '--to', 'h2', '--request-id', 'req-idem-1', '--json']);
  const conflict = await secondReply;
  sub.unsubscribe();
  expect(first.json.state).toBe('succeeded');
  expect(conflict?.code).toBe('CONFLICT');
  const retry = await cluster.ferry(['migrate', 'idem', '--to', 'h2', '--request-id', 'req-idem-1', '--json']);
  expect(retry.code).toBe(0);
  expect(retry.json.id).toBe(first.json.id);
  // The CONFLICT did not burn its request id: retried now, it runs.
  const second = await cluster.ferry(['migrate', 'idem', '--to', 'h3', '--request-id', 'req-idem-2', '--json']);
  expect(second.json).toMatchObject({ state: 'succeeded', to: 'h3' });
  expect(second.json.id).not.toBe(first.json.id);
  await expectIntactOn('idem', 'h3');
  expect((await cluster.ferry(['stop', 'idem'])).code).toBe(0);
});

test('drain moves each of three workloads to another host, intact and exactly once, and cordons the host', async () => {
  for (const name of ['dra', 'drb', 'drc']) await launch(name, 'h1', 8);
  const res = await cluster.ferry(['drain', 'h1', '--json']);
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const results = lines.filter((l) => l.kind === 'result');
  expect(results.map((r) => r.migration.workload).sort()).toEqual(['dra', 'drb', 'drc']);
  for (const r of results) {
    expect(r.migration).toMatchObject({ from: 'h1', state: 'succeeded' });
    expect(['h2', 'h3']).toContain(r.migration.to);
    expect(r.migration.placement.host).toBe(r.migration.to);
  }
  expect(lines[lines.length - 1]).toMatchObject({ kind: 'done', summary: { host: 'h1', total: 3, succeeded: 3, failed: 0, unplaced: 0 } });
  // At most one migration entered a host at once: on each target, no two migrations overlapped.
  const byTarget = new Map<string, Array<[number, number]>>();
  for (const r of results) {
    const span: [number, number] = [Date.parse(r.migration.requestedAt), Date.parse(r.migration.finishedAt)];
    byTarget.set(r.migration.to, [...(byTarget.get(r.migration.to) ?? []), span]);
  }
  for (const spans of byTarget.values()) {
    spans.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).toBeGreaterThanOrEqual(spans[i - 1]![1]);
  }
  for (const r of results) await expectIntactOn(r.migration.workload, r.migration.to);
  const h1 = (await hosts()).find((h) => h.name === 'h1')!;
  expect(h1.cordoned).toBe(true);
  expect(h1.workloadCount).toBe(0);
  // Nothing is placed onto a cordoned host.
  const back = await cluster.ferry(['migrate', 'dra', '--json']);
  expect(back.json.to).not.toBe('h1');
  for (const name of ['dra', 'drb', 'drc']) expect((await cluster.ferry(['stop', name])).code).toBe(0);
});

test('drain --restore post-copy moves every workload with post-copy, intact and exactly once', async () => {
  for (const name of ['drp', 'drq']) await launch(name, 'h2', 16);
  const res = await cluster.ferry(['drain', 'h2', '--restore', 'post-copy', '--json']);
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  const results = res.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.kind === 'result');
  expect(results.map((r) => r.migration.workload).sort()).toEqual(['drp', 'drq']);
  for (const r of results) {
    expect(r.migration).toMatchObject({ from: 'h2', state: 'succeeded', restore: 'post-copy' });
    expect(r.migration.to).not.toBe('h2');
    expect(r.migration.bytesTransferred).toBeGreaterThan(16 * 1024 * 1024);
    await expectIntactOn(r.migration.workload, r.migration.to);
  }
  for (const name of ['drp', 'drq']) expect((await cluster.ferry(['stop', name])).code).toBe(0);
});
