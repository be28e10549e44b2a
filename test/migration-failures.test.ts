/**
 * Every failure before the target's confirm rolls back: the workload keeps running on the source,
 * unfrozen, exactly once, and the target keeps nothing.
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { decode, encode, subjects } from '@ferry/protocol';
import { expectIntactOn, launchCounter } from './helpers/checks';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

const CLUSTER = 'tfail';
// CRIU runs with a clean environment, so the wrapper finds its trigger next to itself.
const WRAPPER_DIR = mkdtempSync(join(tmpdir(), 'ferry-criu-wrapper-'));
const CRIU_WRAPPER = join(WRAPPER_DIR, 'criu');
const FAIL_RESTORE_TRIGGER = join(WRAPPER_DIR, 'fail-restore');
copyFileSync(join(REPO, 'test/fixtures/criu-failing-restore.sh'), CRIU_WRAPPER);
let cluster: TestCluster;
const workloads: CounterWorkload[] = [];

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 202, {
    hosts: 3,
    // h2 restores through a CRIU wrapper that damages the image while the trigger file exists.
    // h3 sends its 3rd large image frame with one byte flipped (once in its life), as a
    // post-copy source answers 20 page requests, then refuses every later one, and as a target
    // takes images of at most 200 MiB (as a nearly full disk would).
    agentEnvFor: (host): Record<string, string> =>
      host === 'h2'
        ? { FERRY_CRIU_PATH: CRIU_WRAPPER }
        : host === 'h3'
          ? { FERRY_FAULT_CORRUPT_IMAGE_FRAME: '3', FERRY_FAULT_REFUSE_PAGE_REQUESTS_AFTER: '20', FERRY_MAX_IMAGE_BYTES: String(200 * 1024 * 1024) }
          : {},
    coordinatorEnv: { FERRY_TRANSFER_IDLE_TIMEOUT_MS: '1500' },
  });
});

afterAll(async () => {
  await cluster?.stop();
  await rm(WRAPPER_DIR, { recursive: true, force: true });
  for (const w of workloads) await w.remove();
});

async function launch(name: string, mib = 16, host = 'h1'): Promise<CounterWorkload> {
  const w = await launchCounter(cluster, name, host, mib);
  workloads.push(w);
  return w;
}

/** After a rollback: still on the source, running (not frozen), counter moving, one copy, memory intact. */
async function expectRolledBackIntact(name: string, w: CounterWorkload, host = 'h1'): Promise<void> {
  await expectIntactOn(cluster, w, name, host);
}

function agentPid(host: string): number {
  const state = dev.readClusterState(CLUSTER);
  const rec = state?.processes.find((p) => p.role === 'agent' && p.host === host);
  if (!rec) throw new Error(`no agent for ${host}`);
  return rec.pid;
}

test('CRIU failing to restore on the target rolls back, with CRIU error lines in the error', async () => {
  const w = await launch('restorefail');
  await writeFile(FAIL_RESTORE_TRIGGER, '');
  try {
    const res = await cluster.ferry(['migrate', 'restorefail', '--to', 'h2', '--json']);
    expect(res.code).toBe(9);
    expect(res.json.state).toBe('rolled-back');
    expect(res.json.error.code).toBe('RESTORE_FAILED');
    expect(res.json.error.details?.length ?? 0).toBeGreaterThan(0);
  } finally {
    await rm(FAIL_RESTORE_TRIGGER, { force: true });
  }
  await expectRolledBackIntact('restorefail', w);
  // And the same workload can still migrate once the fault is gone.
  const again = await cluster.ferry(['migrate', 'restorefail', '--to', 'h2', '--json']);
  expect(again.json.state).toBe('succeeded');
  expect((await cluster.ferry(['stop', 'restorefail'])).code).toBe(0);
});

test('a target that stops answering mid-transfer fails on the transfer deadline and rolls back', async () => {
  const w = await launch('stalled', 128);
  const target = agentPid('h2');
  // Freeze the target's agent the moment the source starts checkpointing.
  const sub = cluster.nc.subscribe(subjects.event('migration'), {
    callback: (_e, msg) => {
      const ev = decode(msg.data) as { workload: string; step: string };
      if (ev.workload === 'stalled' && ev.step === 'checkpointing') process.kill(target, 'SIGSTOP');
    },
  });
  const started = Date.now();
  let res;
  try {
    res = await cluster.ferry(['migrate', 'stalled', '--to', 'h2', '--json']);
  } finally {
    sub.unsubscribe();
    process.kill(target, 'SIGCONT');
  }
  expect(res.json.state).toBe('rolled-back');
  expect(['DEADLINE_EXCEEDED', 'UNAVAILABLE']).toContain(res.json.error.code);
  expect(Date.now() - started).toBeLessThan(60_000);
  await expectRolledBackIntact('stalled', w);
  // The target kept nothing of it once it was back.
  await waitFor('target work dir emptied', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h2`)).filter((d) => d.startsWith('m-')).length === 0);
  expect((await cluster.ferry(['stop', 'stalled'])).code).toBe(0);
});

test('a corrupted image chunk fails its checksum: TRANSFER_FAILED, rolled back, target keeps nothing', async () => {
  const w = await launch('corrupt', 16, 'h3');
  // The fault sits on the NATS path, so this migration is asked to take it.
  const res = await cluster.ferry(['migrate', 'corrupt', '--to', 'h1', '--transport', 'nats', '--json']);
  expect(res.code).toBe(10);
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.error.code).toBe('TRANSFER_FAILED');
  // Frames are sealed with the migration's key: the flipped byte fails the AEAD tag before any crc is looked at.
  expect(res.json.error.message).toMatch(/checksum|crc|authentication/i);
  await expectRolledBackIntact('corrupt', w, 'h3');
  expect((await readdir(`/run/ferry/work/${CLUSTER}/h1`)).filter((d) => d.startsWith('m-'))).toEqual([]);
  // The fault fired once; the next attempt goes through.
  const again = await cluster.ferry(['migrate', 'corrupt', '--to', 'h1', '--json']);
  expect(again.json.state).toBe('succeeded');
  expect((await cluster.ferry(['stop', 'corrupt'])).code).toBe(0);
});

test('post-copy: a source that stops serving pages after the workload resumed on the target rolls back to the source', async () => {
  const w = await launch('postfail', 32, 'h3');
  // The fault sits on the NATS path (the relayed page requests), so this migration is asked to take it.
  const res = await cluster.ferry(['migrate', 'postfail', '--to', 'h1', '--restore', 'post-copy', '--transport', 'nats', '--json']);
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.error.code).toBe('RESTORE_FAILED');
  expect(res.json.error.message).toMatch(/page requests refused/);
  // The copy that ran on h1 for a moment is gone; the frozen source copy carries on, memory intact.
  await expectRolledBackIntact('postfail', w, 'h3');
  await waitFor('target work dir emptied', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h1`)).filter((d) => d.startsWith('m-')).length === 0);
  await waitFor('source lazy dir removed', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h3`)).filter((d) => d.startsWith('m-')).length === 0);
  expect((await cluster.ferry(['stop', 'postfail'])).code).toBe(0);
});

/** Pids of processes whose command line holds every one of `parts`. */
async function pidsWith(...parts: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (parts.every((p) => cmdline.includes(p))) out.push(Number(name));
  }
  return out;
}

test('post-copy: the source\'s CRIU dying while the target pulls pages rolls back, the frozen copy intact', async () => {
  const w = await launch('lazydie', 256);
  const migrating = cluster.ferry(['migrate', 'lazydie', '--to', 'h3', '--restore', 'post-copy', '--json']);
  // Once h3's lazy-pages daemon runs, the workload runs there and pulls its memory from h1's lazy dump.
  let killed = false;
  const deadline = Date.now() + 60_000;
  while ((await pidsWith('lazy-pages', `/work/${CLUSTER}/h3/`)).length === 0) {
    if (Date.now() > deadline) throw new Error('the target never started pulling pages');
    await new Promise((r) => setTimeout(r, 5));
  }
  for (const pid of await pidsWith('dump', '--lazy-pages', `/work/${CLUSTER}/h1/`)) {
    process.kill(pid, 'SIGKILL');
    killed = true;
  }
  expect(killed).toBe(true);
  const res = await migrating;
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.error.code).toBe('RESTORE_FAILED');
  // Held stopped when its CRIU died (never two copies running), thawed by the rollback.
  await expectRolledBackIntact('lazydie', w, 'h1');
  expect((await cluster.ferry(['stop', 'lazydie'])).code).toBe(0);
});

test('the page tunnel: the target\'s page server dying while the source dumps into it rolls back, the source intact', async () => {
  const w = await launch('tundie', 384);
  // h1's dump sends its pages through the tunnel into h3's page server.
  const migrating = cluster.ferry(['migrate', 'tundie', '--to', 'h3', '--transport', 'page-tunnel', '--json']);
  const deadline = Date.now() + 60_000;
  while ((await pidsWith('dump', '--ps-socket', `/work/${CLUSTER}/h1/`)).length === 0) {
    if (Date.now() > deadline) throw new Error('the source never started dumping into the tunnel');
    await new Promise((r) => setTimeout(r, 5));
  }
  const pageServers = await pidsWith('page-server', '--ps-socket', `/work/${CLUSTER}/h3/`);
  expect(pageServers.length).toBe(1);
  process.kill(pageServers[0], 'SIGKILL');
  const res = await migrating;
  expect(res.json.state).toBe('rolled-back');
  expect(['CHECKPOINT_FAILED', 'TRANSFER_FAILED']).toContain(res.json.error.code);
  // The failure happened inside the tunnel's path, and the result says so.
  expect(res.json.transport).toBe('page-tunnel');
  await expectRolledBackIntact('tundie', w, 'h1');
  await waitFor('target work dir emptied', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h3`)).filter((d) => d.startsWith('m-')).length === 0);
  // And the same workload moves once nothing is in the way.
  const again = await cluster.ferry(['migrate', 'tundie', '--to', 'h3', '--transport', 'page-tunnel', '--json']);
  expect(again.json).toMatchObject({ state: 'succeeded', transport: 'page-tunnel' });
  expect(await w.verifyMemory(again.json.pid)).toBe('OK');
  expect((await cluster.ferry(['stop', 'tundie'])).code).toBe(0);
});

test('the streamed dump: a target that refuses the pages half-way (its image limit) fails the dump, which rolls back, the source intact', async () => {
  const w = await launch('streamfull', 256);
  const res = await cluster.ferry(['migrate', 'streamfull', '--to', 'h3', '--json']);
  // The path first: a host whose stream probe failed would move the pages another way, unbounded by this limit.
  expect(res.json.memory).toBe('stream');
  expect(res.json.state).toBe('rolled-back');
  expect(['CHECKPOINT_FAILED', 'TRANSFER_FAILED', 'INVALID_ARGUMENT']).toContain(res.json.error.code);
  // The limit is named: the operator can act on it.
  expect(res.json.error.message).toMatch(/209715200|limit/);
  // CRIU was stopped by its broken pipes, not left blocked: the source thawed, one copy, memory intact.
  await expectRolledBackIntact('streamfull', w, 'h1');
  await waitFor('target work dir emptied', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h3`)).filter((d) => d.startsWith('m-')).length === 0);
  await waitFor('source work dir emptied', async () => (await readdir(`/run/ferry/work/${CLUSTER}/h1`)).filter((d) => d.startsWith('m-')).length === 0);
  // Where the image fits, the same workload streams.
  const again = await cluster.ferry(['migrate', 'streamfull', '--to', 'h2', '--json']);
  expect(again.json).toMatchObject({ state: 'succeeded', memory: 'stream' });
  expect(await w.verifyMemory(again.json.pid)).toBe('OK');
  expect((await cluster.ferry(['stop', 'streamfull'])).code).toBe(0);
});

test('malformed and hostile requests to an agent get clear errors and change nothing', async () => {
  const w = await launch('bystander', 4);
  const ask = async (verb: string, body: unknown) => decode((await cluster.nc.request(`ferry.v1.agent.h1.${verb}`, body as Uint8Array, { timeout: 5000 })).data) as Record<string, unknown>;
  expect(await ask('restore', Uint8Array.from([0xde, 0xad, 0xbe, 0xef]))).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT' } });
  expect(await ask('restore', encode({ v: 1, migrationId: 'm-unknown', workload: 'bystander' }))).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
  expect(await ask('checkpoint', encode({ v: 1, migrationId: 'm1', transferId: '../../etc', workload: 'bystander', target: 'h2', idleTimeoutMs: 1000 }))).toMatchObject({
    ok: false,
    error: { code: 'INVALID_ARGUMENT' },
  });
  expect(await ask('run', encode({ v: 1, name: 'x', argv: ['true'], cwd: '/tmp/../etc' }))).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT' } });
  expect(await ask('run', encode({ v: 2, name: 'x', argv: ['true'] }))).toMatchObject({ ok: false, error: { code: 'FAILED_PRECONDITION' } });
  // A chunk for a transfer nobody receives goes nowhere; the agent is still fine and nothing froze.
  cluster.nc.publish('ferry.v1.xfer.x-nobody.data', encode({ v: 1, t: 'chunk', seq: 0, path: '../../etc/passwd', offset: 0, data: Buffer.from('x'), crc: 0 }));
  expect(await ask('ps', encode({ v: 1 }))).toMatchObject({ ok: true });
  await expectRolledBackIntact('bystander', w);
  expect((await cluster.ferry(['stop', 'bystander'])).code).toBe(0);
});

test('a dead target agent is UNAVAILABLE within seconds and nothing is frozen', async () => {
  const w = await launch('orphanless');
  await cluster.ferry(['hosts', '--json']);
  await dev.killHost(CLUSTER, 'h2');
  const started = Date.now();
  const res = await cluster.ferry(['migrate', 'orphanless', '--to', 'h2', '--json']);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(res.code).toBe(6);
  expect(res.json.state).toBe('rolled-back');
  expect(res.json.error.code).toBe('UNAVAILABLE');
  await expectRolledBackIntact('orphanless', w);
  expect((await cluster.ferry(['stop', 'orphanless'])).code).toBe(0);
});
