/**
 * A compromised agent (issue #16, findings 1, 2 and 8), simulated on the real dev cluster by h3's
 * agent running with deliberate faults (fault-injection.ts): as a migration's source it sends
 * manifests naming paths, pins, an address and mounts of its choosing and a pagemap claiming 4 PiB;
 * restarted later, it lists an impostor of another host's workload. Every attack is refused with an
 * error naming the problem; the workload runs on exactly once where it was; nothing outside the
 * work dirs is touched; the target's agent lives on; and the next honest migration works.
 */
import { constants as fsConstants } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { dev, startLocalHost } from '@ferry/dev-cluster';
import { decode, encode, natsAuthOptionsFromFile, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { expectIntactOn, launchCounter } from './helpers/checks';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import type { CounterWorkload } from './helpers/workload';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);

const CLUSTER = 'tbad';
const SUBNET = 243;
/** An address in the cluster's subnet the coordinator never gave to anyone. */
const FOREIGN_ADDRESS = `198.18.${SUBNET}.201`;
const EVIL_MOUNT = '/mnt/ferry-tbad-evil';

let cluster: TestCluster;
const extraConnections: NatsConnection[] = [];
const workloads: CounterWorkload[] = [];
/** Files outside any work dir that the hostile manifests name; none may change. */
let sentinels: string;
const SENTINEL_TEXT = 'written by the test, never by an agent\n';
/** While set, h3's agent also lists an impostor of this name (the shadow test restarts it with it). */
let shadow: string | undefined;

function h3Faults(): Record<string, string> {
  const pin = { key: 'file[1a:2b]', pinPath: join(sentinels, 'pinned'), flags: fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, pos: 0 };
  const mount = { name: 'evil', type: 'sshfs', source: 'storage:/', options: { ssh_command: `touch ${join(sentinels, 'ssh-command-ran')}` }, path: EVIL_MOUNT };
  return {
    FERRY_FAULT_MANIFEST_PATCH: JSON.stringify({
      'evil-log': { logPath: join(sentinels, 'log') },
      'evil-pin': { pins: [pin] },
      'evil-address': { address: `${FOREIGN_ADDRESS}/24` },
      'evil-mount': { mounts: [mount] },
      'evil-net': { ownNetwork: true },
    }),
    FERRY_FAULT_HUGE_PAGEMAP: 'evil-pages',
    ...(shadow ? { FERRY_FAULT_SHADOW_WORKLOAD: shadow } : {}),
  };
}
const agentEnvFor = (host: string): Record<string, string> => (host === 'h3' ? h3Faults() : {});

beforeAll(async () => {
  sentinels = await mkdtemp(join(tmpdir(), 'ferry-tbad-sentinels-'));
  for (const name of ['log', 'pinned']) await writeFile(join(sentinels, name), SENTINEL_TEXT);
  cluster = await startTestCluster(CLUSTER, SUBNET, { hosts: 3, agentEnvFor });
});

afterAll(async () => {
  for (const nc of extraConnections) await nc.close().catch(() => undefined);
  await cluster?.stop();
  for (const w of workloads) await w.remove();
  if (sentinels) await rm(sentinels, { recursive: true, force: true });
});

const byName = new Map<string, CounterWorkload>();

async function launch(name: string, host: string, mib = 16): Promise<CounterWorkload> {
  const w = await launchCounter(cluster, name, host, mib);
  workloads.push(w);
  byName.set(name, w);
  return w;
}

function agentPid(host: string): number {
  const rec = dev.readClusterState(CLUSTER)?.processes.find((p) => p.role === 'agent' && p.host === host);
  if (!rec) throw new Error(`no agent for ${host}`);
  return rec.pid;
}

async function hostsJson(): Promise<Array<{ name: string; state: string; workloadCount: number; bootId?: string }>> {
  return (await cluster.ferry(['hosts', '--json'])).json;
}

/** What identifies a host's running agent: its process, and the boot id the coordinator shows. */
async function agentOf(host: string): Promise<{ pid: number; bootId: string }> {
  const bootId = (await hostsJson()).find((h) => h.name === host)?.bootId;
  if (!bootId) throw new Error(`no boot id for ${host}`);
  return { pid: agentPid(host), bootId };
}

/** The target's agent is the one from before the attack: same process and boot id, alive, its host never lost or restarted. */
async function expectAgentUnharmed(host: string, before: { pid: number; bootId: string }): Promise<void> {
  expect(await agentOf(host)).toEqual(before);
  expect(() => process.kill(before.pid, 0)).not.toThrow();
  expect((await hostsJson()).find((h) => h.name === host)).toMatchObject({ state: 'alive' });
  const events = (await cluster.ferry(['events', '--json', '--limit', '1000'])).json as Array<{ type: string; step: string; host?: string }>;
  expect(events.filter((e) => e.host === host && (e.step === 'restarted' || e.step === 'lost'))).toEqual([]);
}

/** Nothing outside the work dirs changed: the sentinels as written, no file added beside them. */
async function expectSentinelsUntouched(): Promise<void> {
  expect((await readdir(sentinels)).sort()).toEqual(['log', 'pinned']);
  for (const name of ['log', 'pinned']) expect(await readFile(join(sentinels, name), 'utf8')).toBe(SENTINEL_TEXT);
}

async function targetWorkDirEmpty(host: string): Promise<void> {
  await waitFor(`${host}'s work dir emptied`, async () => (await readdir(`/run/ferry/work/${CLUSTER}/${host}`)).filter((d) => d.startsWith('m-')).length === 0, 20_000);
}

/** `name` (run on h3, whose agent sends it hostile) migrated to `to`: refused, rolled back, intact on h3 with the same pid. */
async function attack(name: string, to: string, migrateArgs: string[], expected: RegExp): Promise<CounterWorkload> {
  const w = await launch(name, 'h3');
  const before = await expectIntactOn(cluster, w, name, 'h3');
  const targetAgent = await agentOf(to);
  const res = await cluster.ferry(['migrate', name, '--to', to, ...migrateArgs, '--json']);
  expect(res.json).toMatchObject({ state: 'rolled-back', error: { code: 'RESTORE_FAILED' } });
  expect(res.code).toBe(9);
  expect(res.json.error.message).toMatch(expected);
  expect(await expectIntactOn(cluster, w, name, 'h3')).toBe(before);
  await expectAgentUnharmed(to, targetAgent);
  await expectSentinelsUntouched();
  await targetWorkDirEmpty(to);
  return w;
}

describe('finding 1: the target acts on no path, pin, address or mount of a source\'s manifest', () => {
  test('a log path outside the work dir: refused, nothing written there', async () => {
    await attack('evil-log', 'h1', [], /manifest is refused: log path .*ferry-tbad-sentinels-.*\/log is not \/.*\/workloads\/evil-log\/output\.log/);
  });

  test('a pin naming a file outside (create/truncate flags): refused, the file neither truncated nor unlinked on the rollback', async () => {
    await attack('evil-pin', 'h2', [], /manifest is refused: pin .*ferry-tbad-sentinels-.*\/pinned is not named for migration m-/);
  });

  test('a service address the coordinator never gave: refused, configured on no host', async () => {
    await attack('evil-address', 'h1', [], new RegExp(`service address ${FOREIGN_ADDRESS.replace(/\./g, '\\.')}/24 is not the coordinator's none`));
    for (const host of ['h1', 'h2', 'h3']) {
      const { stdout } = await dev.hostExec(CLUSTER, host, ['ip', '-4', '-o', 'addr', 'show']);
      expect(stdout).not.toContain(FOREIGN_ADDRESS);
    }
  });

  test('a mount the coordinator did not give (sshfs with ssh_command): refused, nothing mounted, the command never ran', async () => {
    await attack('evil-mount', 'h2', [], /mount evil at \/mnt\/ferry-tbad-evil is not one the coordinator gave/);
    for (const host of ['h1', 'h2']) {
      const { stdout } = await dev.hostExec(CLUSTER, host, ['cat', '/proc/self/mounts']);
      expect(stdout).not.toContain(EVIL_MOUNT);
    }
  });
});

describe('a network namespace of its own claimed by a source', () => {
  test('for a workload run as root without an address: ignored (the target derives it from --user and the coordinator\'s address), restored as it is, no link made on the target', async () => {
    const w = await launch('evil-net', 'h3');
    await expectIntactOn(cluster, w, 'evil-net', 'h3');
    const targetAgent = await agentOf('h2');
    const res = await cluster.ferry(['migrate', 'evil-net', '--to', 'h2', '--json']);
    expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2' });
    await expectIntactOn(cluster, w, 'evil-net', 'h2');
    const { stdout } = await dev.hostExec(CLUSTER, 'h2', ['ip', '-o', 'link', 'show']);
    expect(stdout).not.toMatch(/\bfw[0-9a-f]{12}\b/);
    expect((await cluster.ferry(['ps', '--json'])).json.find((x: { name: string }) => x.name === 'evil-net')).toMatchObject({ host: 'h2', ownNetwork: false });
    await expectAgentUnharmed('h2', targetAgent);
    expect((await cluster.ferry(['stop', 'evil-net'])).code).toBe(0);
  });
});

describe('finding 8: a pagemap record claiming 2^40 pages', () => {
  // Before the fix the eager restore hung: CRIU walked the run page by page, holding h2's restore
  // lock, so every later migration into h2 waited too (the CLI gave up after 120 s).
  const HUGE = /the image claims more than this host's \d+ bytes of memory \(pagemap-\d+\.img alone lists a run of 1099511627776 pages\)/;

  test('post-copy through NATS (the target would plan the lazy runs itself): refused before any restore, the target agent lives', async () => {
    await attack('evil-pages', 'h1', ['--restore', 'post-copy', '--transport', 'nats'], HUGE);
  });

  test('eager, by the default (streamed) data path: refused before CRIU sees it, and the target takes the next migration', async () => {
    const w = byName.get('evil-pages')!;
    const targetAgent = await agentOf('h2');
    const before = await expectIntactOn(cluster, w, 'evil-pages', 'h3');
    const res = await cluster.ferry(['migrate', 'evil-pages', '--to', 'h2', '--json']);
    expect(res.json).toMatchObject({ state: 'rolled-back', error: { code: 'RESTORE_FAILED', message: expect.stringMatching(HUGE) } });
    expect(await expectIntactOn(cluster, w, 'evil-pages', 'h3')).toBe(before);
    await expectAgentUnharmed('h2', targetAgent);
    await targetWorkDirEmpty('h2');
  });
});

describe('finding 2: an agent listing an impostor of another host\'s workload', () => {
  let real: CounterWorkload;
  let realPid: number;

  test('migrate and drain refuse to act on a name two hosts report running (CONFLICT naming both); the real one stays put', async () => {
    real = await launch('db', 'h1');
    realPid = await expectIntactOn(cluster, real, 'db', 'h1');
    const h3Before = (await hostsJson()).find((h) => h.name === 'h3')!.workloadCount;
    // h3's agent is compromised now: restarted with the impostor in its lists.
    shadow = 'db';
    await dev.killHost(CLUSTER, 'h3');
    await startLocalHost(CLUSTER, 'h3', { agentEnvFor });
    await waitFor('the impostor reported', async () => (await hostsJson()).find((h) => h.name === 'h3' && h.state === 'alive')?.workloadCount === h3Before + 1, 30_000);

    for (const to of [[], ['--to', 'h2']]) {
      const res = await cluster.ferry(['migrate', 'db', ...to, '--json']);
      expect(res.code).toBe(5);
      expect(res.json.error).toMatchObject({ code: 'CONFLICT', message: expect.stringMatching(/db is reported running on 2 hosts \(h1, h3\)/) });
    }
    for (const host of ['h1', 'h3']) {
      const drain = await cluster.ferry(['drain', host, '--json']);
      const docs = drain.stdout.trim().split('\n').map((l) => JSON.parse(l));
      expect(docs).toContainEqual({ kind: 'unplaced', workload: 'db', error: expect.objectContaining({ code: 'CONFLICT', message: expect.stringMatching(/\(h1, h3\)/) }) });
      expect(docs.filter((d) => d.kind === 'result' && d.migration.workload === 'db')).toEqual([]);
      expect(drain.code).not.toBe(0);
      expect((await cluster.ferry(['uncordon', host, '--json'])).code).toBe(0);
    }
    // Still the same process on h1, one copy, counting on.
    const c = await real.counter();
    await real.advancesPast(c + 5);
    expect(await real.runningCopies()).toEqual([realPid]);
    expect(await real.starts()).toBe(1);
  });

  test('the impostor gone, the real workload migrates honestly', async () => {
    shadow = undefined;
    await dev.killHost(CLUSTER, 'h3');
    await startLocalHost(CLUSTER, 'h3', { agentEnvFor });
    await waitFor('db reported by h1 alone', async () => {
      const h3 = (await hostsJson()).find((h) => h.name === 'h3');
      return h3?.state === 'alive' && (await cluster.ferry(['ps', '--json'])).json.filter((x: { name: string }) => x.name === 'db').every((x: { host: string }) => x.host === 'h1');
    }, 30_000);
    expect(await expectIntactOn(cluster, real, 'db', 'h1')).toBe(realPid);
    // The registry may still hold h3's last list for a beat.
    await sleep(2_000);
    const res = await cluster.ferry(['migrate', 'db', '--to', 'h2', '--json']);
    expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2' });
    await expectIntactOn(cluster, real, 'db', 'h2');
  });
});

test('an honest workload of the compromised source still migrates, and so does one into a host that refused the attacks', async () => {
  const w = await launch('honest', 'h3');
  const res = await cluster.ferry(['migrate', 'honest', '--to', 'h1', '--json']);
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h1' });
  await expectIntactOn(cluster, w, 'honest', 'h1');
  await expectSentinelsUntouched();
});

/** An agent's own NATS connection (its credentials file, as the agent itself has it). */
async function connectAs(file: string): Promise<NatsConnection> {
  const nc = await connect({ servers: cluster.natsUrl, timeout: 3_000, ...natsAuthOptionsFromFile(file) });
  extraConnections.push(nc);
  return nc;
}

test('placement cannot be baited: a made-up host cannot register, and impossible memory in a heartbeat is dropped', async () => {
  const h1 = await connectAs(cluster.credentials!.agents.h1);
  const errors: string[] = [];
  void (async () => {
    for await (const st of h1.status()) if (st.type === 'error') errors.push(String(st.data));
  })();
  // A host nobody runs, with all the memory in the world, to attract every placement.
  const reg = await h1
    .request(subjects.register('bait'), encode({ v: PROTOCOL_VERSION, host: 'bait' }), { timeout: 2_000 })
    .then(() => null, (e: { code?: string }) => e);
  expect(reg).toMatchObject({ code: 'PERMISSIONS_VIOLATION' });
  // Its own host, claiming more free memory than it has: the coordinator drops the heartbeat.
  const real = await new Promise<Record<string, unknown>>((resolve) => {
    const sub = cluster.nc.subscribe(subjects.heartbeat('h1'), {
      callback: (_e, msg) => {
        sub.unsubscribe();
        resolve(decode(msg.data) as Record<string, unknown>);
      },
    });
  });
  const hostMemory = async () => ((await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; memory: { availableBytes: number } }>).find((h) => h.name === 'h1')!.memory.availableBytes;
  const bait = encode({ ...real, seq: 2_000_000, memory: { totalBytes: 2 ** 40, availableBytes: 2 ** 50 } });
  const repeating = setInterval(() => h1.publish(subjects.heartbeat('h1'), bait), 100);
  try {
    await sleep(1_500);
    expect(await hostMemory()).toBeLessThan(2 ** 40);
  } finally {
    clearInterval(repeating);
  }
  const names = ((await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string }>).map((h) => h.name).sort();
  expect(names).toEqual(['h1', 'h2', 'h3']);
  expect(errors).toEqual(['PERMISSIONS_VIOLATION']);
});

test("progress events: an agent publishes only under its own host, and the coordinator counts none for a migration not running into that host", async () => {
  const h1 = await connectAs(cluster.credentials!.agents.h1);
  const errors: string[] = [];
  void (async () => {
    for await (const st of h1.status()) if (st.type === 'error') errors.push(String(st.data));
  })();
  const transferBytes = async () => {
    const res = await fetch(`${cluster.httpUrl}/metrics`, { headers: { authorization: `Bearer ${cluster.httpTokens.viewer}` } });
    return Number(/^ferry_transfer_bytes_total (\d+)/m.exec(await res.text())?.[1] ?? 'NaN');
  };
  const before = await transferBytes();
  expect(Number.isFinite(before)).toBe(true);
  const forged = encode({ v: PROTOCOL_VERSION, migrationId: 'm-forged-1', bytes: 1_000_000_000_000 });
  // Under another host: refused by nats-server itself.
  h1.publish(subjects.progress('h2'), forged);
  // Under its own host, for a migration that is not running into h1: dropped by the coordinator.
  h1.publish(subjects.progress('h1'), forged);
  await h1.flush();
  await sleep(500);
  expect(errors).toEqual(['PERMISSIONS_VIOLATION']);
  expect(await transferBytes()).toBe(before);
});
