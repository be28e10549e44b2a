/**
 * Faults around a migration, each ending with every workload running exactly once and intact:
 * the target agent killed mid-transfer, the source agent killed after the dump, the coordinator
 * killed mid-migration (a restarted one finishes or rolls back what it finds in Redis), and a
 * standby coordinator taking over a lapsed leader lease.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { dev, startLocalHost } from '@ferry/dev-cluster';
import { CoordVerb, decode, requestCoordVerb, subjects } from '@ferry/protocol';
import { expectIntactOn as expectIntact, launchCounter } from './helpers/checks';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);

const CLUSTER = 'tcfault';
const LEASE_TTL_MS = '1500';
let cluster: TestCluster;
const workloads = new Map<string, CounterWorkload>();
/** Coordinators this test started itself (the cluster's own one is stopped by cluster.stop()). */
const coordinators: ChildProcess[] = [];
/** nats-server / redis-server started again after a simulated crash (not in the cluster's records). */
const respawned: ChildProcess[] = [];

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 234, {
    hosts: 3,
    coordinatorEnv: { FERRY_LEASE_TTL_MS: LEASE_TTL_MS, FERRY_TRANSFER_IDLE_TIMEOUT_MS: '1500', FERRY_COORDINATOR_ID: 'c-dev' },
  });
});

afterAll(async () => {
  // Debugging aid: FERRY_TEST_KEEP_LOGS=DIR keeps the cluster's logs.
  if (process.env.FERRY_TEST_KEEP_LOGS) await cp(state().layout.logDir, process.env.FERRY_TEST_KEEP_LOGS, { recursive: true }).catch(() => undefined);
  for (const c of coordinators) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await cluster?.stop();
  for (const c of respawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const w of workloads.values()) await w.remove();
});

/** SIGKILLs the cluster's nats-server or redis-server and starts it again, same command, after `downMs`. */
async function crashAndRestart(role: 'nats' | 'redis', downMs: number): Promise<void> {
  const running = respawned.find((c) => (c as ChildProcess & { role?: string }).role === role && c.exitCode === null && c.signalCode === null);
  const rec = state().processes.find((p) => p.role === role)!;
  const pid = running?.pid ?? rec.pid;
  process.kill(pid, 'SIGKILL');
  await waitFor(`${role} gone`, async () => !(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')));
  await sleep(downMs);
  const child = spawn(rec.argv[0]!, rec.argv.slice(1), { stdio: 'ignore' }) as ChildProcess & { role?: string };
  child.role = role;
  respawned.push(child);
}

function state() {
  const s = dev.readClusterState(CLUSTER);
  if (!s) throw new Error('no cluster state');
  return s;
}

/** A coordinator process like the cluster's own, with its log beside the cluster's logs. */
function startCoordinatorProcess(id: string): ChildProcess {
  const s = state();
  const log = openSync(join(s.layout.logDir, `coordinator-${id}.log`), 'a');
  const child = spawn(process.execPath, [join(REPO, 'packages/coordinator/dist/main.js')], {
    env: {
      ...process.env,
      FERRY_NATS_URL: s.natsUrl,
      FERRY_REDIS_URL: s.redisUrl,
      FERRY_LEASE_TTL_MS: LEASE_TTL_MS,
      FERRY_COORDINATOR_ID: id,
      FERRY_TRANSFER_IDLE_TIMEOUT_MS: '1500',
      // The cluster's own coordinator credentials when its NATS requires them.
      ...(s.credentials ? { FERRY_NATS_CREDENTIALS: s.credentials.coordinator } : {}),
    },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  coordinators.push(child);
  return child;
}

function devCoordinatorPid(): number {
  const rec = state().processes.find((p) => p.role === 'coordinator');
  if (!rec) throw new Error('no coordinator');
  return rec.pid;
}

async function leaseHolder(): Promise<string | null> {
  const redis = new Redis(state().redisUrl);
  try {
    return await redis.get('ferry:leader');
  } finally {
    redis.disconnect();
  }
}

/** The host comes back: its agent started again as the cluster started it (`ferry dev start`), registered. */
async function restartAgent(host: string): Promise<void> {
  await startLocalHost(CLUSTER, host);
}

async function launch(name: string, host: string, mib: number): Promise<CounterWorkload> {
  const w = await launchCounter(cluster, name, host, mib);
  workloads.set(name, w);
  return w;
}

/** Runs on `host`, unfrozen, counter moving, started once, exactly one copy, memory intact. */
async function expectIntactOn(name: string, host: string): Promise<void> {
  await expectIntact(cluster, workloads.get(name)!, name, host);
}

/** Calls `fn` once, when the first migration event of `workload` at `step` arrives. */
function onStep(workload: string, step: string, fn: (ev: { migrationId: string }) => void): () => void {
  let fired = false;
  const sub = cluster.nc.subscribe(subjects.event('migration'), {
    callback: (_e, msg) => {
      const ev = decode(msg.data) as { workload: string; step: string; migrationId: string };
      if (!fired && ev.workload === workload && ev.step === step) {
        fired = true;
        fn(ev);
      }
    },
  });
  return () => sub.unsubscribe();
}

async function finalState(id: string): Promise<{ state: string; to: string; from: string; error?: { code: string } }> {
  return waitFor(`migration ${id} final`, async () => {
    const res = await cluster.ferry(['status', id, '--json'], 10_000);
    // An error answer (e.g. UNAVAILABLE while the coordinator reconnects to NATS) is not a final state: ask again.
    return typeof res.json?.state === 'string' && !['pending', 'running'].includes(res.json.state) ? res.json : undefined;
  }, 90_000);
}

/** Process state letter from /proc (T = stopped). */
async function procState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

test('target agent killed mid-transfer: rolled back, runs once on the source', async () => {
  await launch('tkill', 'h1', 128);
  let killed: Promise<unknown> = Promise.resolve();
  let migrationId = '';
  const unsubStep = onStep('tkill', 'checkpointing', (ev) => (migrationId = ev.migrationId));
  // Killed when the target reports its first received bytes: the transfer is under way.
  const progress = cluster.nc.subscribe(subjects.allProgress(), {
    callback: (_e, msg) => {
      const p = decode(msg.data) as { migrationId: string; bytes: number };
      if (p.migrationId === migrationId && p.bytes > 0 && migrationId) {
        migrationId = '';
        killed = dev.killHost(CLUSTER, 'h2');
      }
    },
  });
  // Over NATS, where the target's progress events show bytes arriving (the faster paths finish too soon to be caught).
  const res = await cluster.ferry(['migrate', 'tkill', '--to', 'h2', '--transport', 'nats', '--json']);
  unsubStep();
  progress.unsubscribe();
  await killed;
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.bytesTransferred).toBeLessThan(128 * 1024 * 1024);
  await expectIntactOn('tkill', 'h1');
  await restartAgent('h2');
  await expectIntactOn('tkill', 'h1');
  expect((await cluster.ferry(['stop', 'tkill'])).code).toBe(0);
});

test('source agent killed after the dump: runs once on the target; the frozen copy is killed, never thawed', async () => {
  await launch('skill', 'h1', 16);
  const [before] = (await cluster.ferry(['ps', '--json'])).json.filter((x: { name: string }) => x.name === 'skill');
  let killed: Promise<unknown> = Promise.resolve();
  const unsub = onStep('skill', 'restoring', () => (killed = dev.killHost(CLUSTER, 'h1')));
  const res = await cluster.ferry(['migrate', 'skill', '--to', 'h2', '--json']);
  unsub();
  await killed;
  expect(res.json.state).toBe('succeeded');
  // The source's frozen copy outlived its agent, still stopped: the workload runs only on h2.
  expect(await procState(before.pid)).toBe('T');
  const w = workloads.get('skill')!;
  const c = await w.counter();
  await w.advancesPast(c + 5);
  expect(await w.starts()).toBe(1);
  // The agent comes back; the coordinator sees the frozen copy and has it released (killed).
  await restartAgent('h1');
  await waitFor('frozen source copy gone', async () => !(await readFile(`/proc/${before.pid}/stat`, 'utf8').catch(() => '')), 30_000);
  await expectIntactOn('skill', 'h2');
  expect((await cluster.ferry(['stop', 'skill'])).code).toBe(0);
});

/** Kills whichever coordinator leads at `step` of `workload`'s migration, then starts another. */
async function migrateThroughCoordinatorCrash(workload: string, to: string, step: string, kill: () => void, restartId: string) {
  let migrationId = '';
  const crashed = new Promise<void>((resolve) => {
    const unsub = onStep(workload, step, (ev) => {
      migrationId = ev.migrationId;
      kill();
      unsub();
      resolve();
    });
  });
  // Asked directly: the CLI would wait for a reply the killed coordinator never sends.
  void requestCoordVerb(cluster.nc, CoordVerb.MIGRATE, { workload, to }, { timeoutMs: 120_000 }).catch(() => undefined);
  await crashed;
  const next = startCoordinatorProcess(restartId);
  await waitFor('restarted coordinator leads', async () => (await leaseHolder()) === restartId, 30_000);
  return { migration: await finalState(migrationId), coordinator: next };
}

test('coordinator killed mid-migration: a restarted one rolls back before the restore, goes forward after it', async () => {
  await launch('ckill', 'h1', 64);
  // Killed while the source dumps and streams: no restore was asked for, so it rolls back.
  const first = await migrateThroughCoordinatorCrash('ckill', 'h2', 'checkpointing', () => process.kill(devCoordinatorPid(), 'SIGKILL'), 'c-second');
  expect(first.migration.state).toBe('rolled-back');
  await expectIntactOn('ckill', 'h1');

  // Killed once the restore was asked for: the target's own record decides, and it restored.
  const second = await migrateThroughCoordinatorCrash('ckill', 'h2', 'restoring', () => first.coordinator.kill('SIGKILL'), 'c-third');
  expect(['succeeded', 'rolled-back']).toContain(second.migration.state);
  await expectIntactOn('ckill', second.migration.state === 'succeeded' ? 'h2' : 'h1');
  // The new leader serves everything: the next migration just works.
  const home = second.migration.state === 'succeeded' ? 'h1' : 'h3';
  const again = await cluster.ferry(['migrate', 'ckill', '--to', home, '--json']);
  expect(again.json.state).toBe('succeeded');
  await expectIntactOn('ckill', home);
  expect((await cluster.ferry(['stop', 'ckill'])).code).toBe(0);
});

test('two coordinators: only the lease holder serves; the standby takes over when the leader dies', async () => {
  const leader = await leaseHolder();
  expect(leader).toBe('c-third');
  const standby = startCoordinatorProcess('c-standby');
  await sleep(2_000);
  expect(await leaseHolder()).toBe('c-third');
  // A command is answered exactly once (only the leader subscribes).
  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.code).toBe(0);
  coordinators.find((c) => c !== standby && c.exitCode === null && c.signalCode === null)!.kill('SIGKILL');
  const killedAt = Date.now();
  await waitFor('standby leads', async () => (await leaseHolder()) === 'c-standby', 15_000);
  expect(Date.now() - killedAt).toBeLessThan(3 * Number(LEASE_TTL_MS) + 2_000);
  await launch('lease', 'h1', 4);
  const res = await cluster.ferry(['migrate', 'lease', '--json']);
  expect(res.json.state).toBe('succeeded');
  await expectIntactOn('lease', res.json.to);
  expect((await cluster.ferry(['stop', 'lease'])).code).toBe(0);
});

test('nats-server restarted mid-migration: the migration ends one way or the other, the workload runs once', async () => {
  await launch('natsrst', 'h1', 64);
  let restarted: Promise<void> = Promise.resolve();
  let migrationId = '';
  const unsub = onStep('natsrst', 'checkpointing', (ev) => {
    migrationId = ev.migrationId;
    restarted = crashAndRestart('nats', 1_000);
  });
  // Its reply may be lost with the server: follow the migration through `status` instead.
  void requestCoordVerb(cluster.nc, CoordVerb.MIGRATE, { workload: 'natsrst', to: 'h2' }, { timeoutMs: 120_000 }).catch(() => undefined);
  await waitFor('migration started', async () => migrationId, 30_000);
  unsub();
  await restarted;
  const m = await finalState(migrationId);
  expect(['succeeded', 'rolled-back']).toContain(m.state);
  await expectIntactOn('natsrst', m.state === 'succeeded' ? 'h2' : 'h1');
  // The cluster works as before: hosts back, the next migration succeeds.
  const again = await cluster.ferry(['migrate', 'natsrst', '--to', 'h3', '--json']);
  expect(again.json.state).toBe('succeeded');
  await expectIntactOn('natsrst', 'h3');
  expect((await cluster.ferry(['stop', 'natsrst'])).code).toBe(0);
});

test('Redis restarted (empty): the leader takes its lease again, re-persists hosts and cordons, and migrates', async () => {
  expect((await cluster.ferry(['cordon', 'h3'])).code).toBe(0);
  const leader = await leaseHolder();
  await crashAndRestart('redis', 500);
  await waitFor('lease held again', async () => (await leaseHolder().catch(() => null)) !== null, 30_000);
  expect(await leaseHolder()).toBe(leader);
  const redis = new Redis(state().redisUrl);
  try {
    const saved = await waitFor('hosts re-persisted', async () => redis.hget('ferry:hosts', 'h3'), 15_000);
    expect(JSON.parse(saved).cordoned).toBe(true);
  } finally {
    redis.disconnect();
  }
  await launch('redisrst', 'h1', 4);
  const res = await cluster.ferry(['migrate', 'redisrst', '--json']);
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2' });
  await expectIntactOn('redisrst', 'h2');
  expect((await cluster.ferry(['uncordon', 'h3'])).code).toBe(0);
  expect((await cluster.ferry(['stop', 'redisrst'])).code).toBe(0);
});
