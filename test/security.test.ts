/**
 * Security against real nats-server with authentication, subject permissions and TLS on (the dev
 * cluster's defaults): who may connect, an agent's credentials commanding another agent, a
 * migration whose transfer subjects are captured and searched for the workload's memory, a forged
 * frame injected into a live migration, and a seeded fuzz of the agents' and coordinator's subjects.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { dev } from '@ferry/dev-cluster';
import { AgentVerb, CoordVerb, decode, encode, natsAuthOptionsFromFile, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const execFileP = promisify(execFile);
const CLUSTER = 'tsec';
const MIB = 1024 * 1024;
const FIXTURE = join(__dirname, 'fixtures', 'marker-memory.py');
/** Requests of the fuzz, over the agents' and the coordinator's subjects together. */
const FUZZ_REQUESTS = 2_400;
const FUZZ_SEED = 0x0f_e1e5;
const FUZZ_BATCH = 40;
let cluster: TestCluster;
const dirs: string[] = [];
const extraConnections: NatsConnection[] = [];

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 221);
});

afterAll(async () => {
  for (const nc of extraConnections) await nc.close().catch(() => undefined);
  await cluster?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function creds() {
  if (cluster.credentials === null) throw new Error('the cluster runs without NATS auth');
  return cluster.credentials;
}

async function connectAs(file: string): Promise<NatsConnection> {
  const nc = await connect({ servers: cluster.natsUrl, timeout: 3_000, ...natsAuthOptionsFromFile(file) });
  extraConnections.push(nc);
  return nc;
}

/** The marker workload seen from the test. */
class MarkerWorkload {
  constructor(readonly dir: string, readonly marker: string) {}
  static async launch(name: string, mib: number): Promise<MarkerWorkload> {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-sec-'));
    dirs.push(dir);
    const w = new MarkerWorkload(dir, `FERRY-SECRET-${randomBytes(8).toString('hex')}-`);
    const res = await cluster.ferry(['run', '--host', 'h1', '--name', name, '--json', '--', '/usr/bin/python3', FIXTURE, dir, String(mib), w.marker]);
    expect(res.code).toBe(0);
    await waitFor('counter', async () => (await w.counter()) > 20, 30_000);
    return w;
  }
  async counter(): Promise<number> {
    return Number(await readFile(join(this.dir, 'counter'), 'utf8').catch(() => '0')) || 0;
  }
  async starts(): Promise<number> {
    return (await readFile(join(this.dir, 'starts'), 'utf8')).split('\n').filter(Boolean).length;
  }
  async verify(pid: number): Promise<string> {
    await rm(join(this.dir, 'verify'), { force: true });
    process.kill(pid, 'SIGUSR1');
    return waitFor('verify', async () => (await readFile(join(this.dir, 'verify'), 'utf8').catch(() => '')).split(' ')[0], 20_000);
  }
  /** Live processes running this fixture for this state dir (on any host). */
  async copies(): Promise<number> {
    let n = 0;
    for (const e of await readdir('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      const args = (await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')).split('\0');
      const stat = await readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
      if (args[1] === FIXTURE && args[2] === this.dir && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') n += 1;
    }
    return n;
  }
}

async function where(name: string): Promise<{ host: string; pid: number; state: string }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string }>).find((w) => w.name === name)!;
}

test('NATS refuses clients without credentials, with a wrong password or without TLS; the CLI gets in with its own', async () => {
  const c = creds();
  const tryConnect = async (opts: Record<string, unknown>) => {
    try {
      const nc = await connect({ servers: cluster.natsUrl, timeout: 3_000, reconnect: false, ...opts });
      await nc.close();
      return 'connected';
    } catch (err) {
      return String((err as { code?: string }).code ?? (err as Error).message);
    }
  };
  const cli = JSON.parse(await readFile(c.cli, 'utf8'));
  // TLS, trusted CA, no user: the server refuses.
  expect(await tryConnect({ tls: { caFile: cli.tls.caFile } })).toBe('AUTHORIZATION_VIOLATION');
  expect(await tryConnect({ tls: { caFile: cli.tls.caFile }, user: 'cli', pass: 'not-the-password-at-all' })).toBe('AUTHORIZATION_VIOLATION');
  // Right credentials over plain TCP: TLS is the dev cluster's default, the server requires it.
  expect(await tryConnect({ user: 'cli', pass: cli.password })).not.toBe('connected');
  // Right credentials, but the server's certificate is not trusted without the dev CA.
  expect(await tryConnect({ tls: {}, user: 'cli', pass: cli.password })).not.toBe('connected');
  expect(await tryConnect({ user: 'cli', pass: cli.password, tls: { caFile: cli.tls.caFile } })).toBe('connected');
  // Credentials files are 0600 in a 0700 directory.
  const { statSync } = await import('node:fs');
  for (const f of [c.cli, c.admin, c.coordinator, ...Object.values(c.agents)]) expect(statSync(f).mode & 0o777).toBe(0o600);
  expect(statSync(join(c.cli, '..')).mode & 0o777).toBe(0o700);

  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.code).toBe(0);
  expect(hosts.json.map((h: { name: string }) => h.name).sort()).toEqual(['h1', 'h2']);
});

test("an agent's credentials cannot command another agent, listen to its commands, or ask the coordinator to migrate", async () => {
  const h1 = await connectAs(creds().agents.h1);
  const errors: string[] = [];
  void (async () => {
    for await (const s of h1.status()) if (s.type === 'error') errors.push(String(s.data));
  })();
  const refused = async (nc: NatsConnection, subject: string) => {
    const err = await nc.request(subject, encode({ v: PROTOCOL_VERSION }), { timeout: 2_000 }).then(() => null, (e: { code?: string; message: string }) => e);
    expect(err).toMatchObject({ code: 'PERMISSIONS_VIOLATION' });
    expect(err!.message).toContain(subject);
  };
  await refused(h1, subjects.agent('h2', AgentVerb.PS));
  await refused(h1, subjects.coord(CoordVerb.MIGRATE));
  const sub = h1.subscribe(`ferry.v1.agent.h2.>`);
  await h1.flush();
  await sleep(300);
  expect(sub.isClosed()).toBe(true);
  // Two refused publishes and the refused subscription, each reported by the server.
  expect(errors).toEqual(['PERMISSIONS_VIOLATION', 'PERMISSIONS_VIOLATION', 'PERMISSIONS_VIOLATION']);
  expect(h1.isClosed()).toBe(false);

  // The CLI principal may ask the coordinator but not an agent, and cannot forge heartbeats.
  const cli = await connectAs(creds().cli);
  await refused(cli, subjects.agent('h1', AgentVerb.PS));
  await refused(cli, subjects.heartbeat('h1'));
  await refused(cli, subjects.register('h1'));
  const ok = decode((await cli.request(subjects.coord(CoordVerb.HOSTS), encode({ v: PROTOCOL_VERSION }), { timeout: 5_000 })).data) as { ok: boolean };
  expect(ok.ok).toBe(true);
  // Its own agent subjects are where the coordinator reaches h1: still answered.
  const ps = decode((await cluster.nc.request(subjects.agent('h1', AgentVerb.PS), encode({ v: PROTOCOL_VERSION }), { timeout: 5_000 })).data) as { ok: boolean };
  expect(ps.ok).toBe(true);
});

test("an agent's credentials cannot heartbeat or register as another host; a body naming another host than its subject is ignored", async () => {
  const h1 = await connectAs(creds().agents.h1);
  const errors: string[] = [];
  void (async () => {
    for await (const s of h1.status()) if (s.type === 'error') errors.push(String(s.data));
  })();
  // A real heartbeat of h2, to forge from: schema-valid, h2's boot id, plus a workload h2 does not run.
  const real = await new Promise<Record<string, unknown>>((resolve) => {
    const sub = cluster.nc.subscribe(subjects.heartbeat('h2'), {
      callback: (_e, msg) => {
        sub.unsubscribe();
        resolve(decode(msg.data) as Record<string, unknown>);
      },
    });
  });
  const ghost = { name: 'ghost', host: 'h2', state: 'running', pid: 4242, rssBytes: 0, argv: ['/bin/true'], startedAt: new Date().toISOString(), mounts: [] };
  const forged = encode({ ...real, seq: 1_000_000, workloads: [ghost], workloadsDigest: 'forged' });
  const ghostListed = async () => ((await cluster.ferry(['ps', '--json'])).json as Array<{ name: string }>).some((w) => w.name === 'ghost');

  // h2's subjects are refused to h1's credentials by nats-server itself.
  h1.publish(subjects.heartbeat('h2'), forged);
  const reg = await h1
    .request(subjects.register('h2'), encode({ v: PROTOCOL_VERSION }), { timeout: 2_000 })
    .then(() => null, (e: { code?: string; message: string }) => e);
  expect(reg).toMatchObject({ code: 'PERMISSIONS_VIOLATION' });
  await h1.flush();
  await sleep(300);
  expect(errors).toEqual(['PERMISSIONS_VIOLATION', 'PERMISSIONS_VIOLATION']);

  // On its own subject, a body claiming h2 is dropped by the coordinator, and a registration refused.
  h1.publish(subjects.heartbeat('h1'), forged);
  const { address, criu, memory, bootId } = real as { address: string; criu: unknown; memory: unknown; bootId: string };
  const regReply = decode(
    (await h1.request(subjects.register('h1'), encode({ v: PROTOCOL_VERSION, host: 'h2', address, criu, memory, agentPid: 1, bootId }), { timeout: 5_000 })).data,
  ) as { ok: boolean; error?: { code: string; message: string } };
  expect(regReply).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT' } });
  await sleep(1_500);
  expect(await ghostListed()).toBe(false);

  // Control: the very same body on h2's subject (published by the admin principal) is taken, so
  // only the subject check kept it out above. h2's next real heartbeat puts its own list back.
  // Repeated until seen: h2's own next heartbeat replaces it within a second, shorter than a
  // loaded machine may take to run `ferry ps` once.
  const repeating = setInterval(() => cluster.nc.publish(subjects.heartbeat('h2'), forged), 100);
  try {
    await waitFor('forged body on the right subject applied', ghostListed, 10_000);
  } finally {
    clearInterval(repeating);
  }
  await waitFor('h2 lists its own workloads again', async () => !(await ghostListed()), 15_000);
  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.json.filter((h: { state: string }) => h.state === 'alive').map((h: { name: string }) => h.name).sort()).toEqual(['h1', 'h2']);
});

test('a migration over NATS with auth and TLS: the captured transfer subjects hold none of the workload memory', async () => {
  const w = await MarkerWorkload.launch('secret', 24);
  const before = await where('secret');
  expect(await w.verify(before.pid)).toBe('OK');
  const captured: Buffer[] = [];
  const spy = cluster.nc.subscribe('ferry.v1.xfer.>', { callback: (_e, msg) => captured.push(Buffer.from(msg.data)) });
  // The two requests that carry the migration's key, as whoever reads the bus sees them.
  const keyRequests: Array<Record<string, unknown>> = [];
  const keySpy = cluster.nc.subscribe('ferry.v1.agent.*.*', {
    callback: (_e, msg) => {
      if (/\.(receive|checkpoint)$/.test(msg.subject)) keyRequests.push(decode(msg.data) as Record<string, unknown>);
    },
  });
  const counterBefore = await w.counter();
  const res = await cluster.ferry(['migrate', 'secret', '--to', 'h2', '--transport', 'nats', '--json']);
  await cluster.nc.flush();
  spy.unsubscribe();
  keySpy.unsubscribe();
  // The image key never crosses in clear: each agent gets it sealed to its own registered key.
  expect(keyRequests).toHaveLength(2);
  for (const r of keyRequests) {
    expect(r.imageKey).toBeUndefined();
    expect((r.sealedImageKey as Uint8Array).byteLength).toBe(32 + 12 + 32 + 16);
  }
  expect(Buffer.from(keyRequests[0].sealedImageKey as Uint8Array).equals(Buffer.from(keyRequests[1].sealedImageKey as Uint8Array))).toBe(false);
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2', transport: 'nats' });
  const capture = Buffer.concat(captured);
  // The whole image went through the capture, and not one copy of the marker is in it.
  expect(capture.length).toBeGreaterThan(24 * MIB);
  expect(capture.includes(Buffer.from(w.marker))).toBe(false);
  expect(capture.includes(Buffer.from(w.marker.slice(0, 16)))).toBe(false);
  expect(capture.includes(Buffer.from('pages-1.img'))).toBe(false);

  const after = await where('secret');
  expect(after.host).toBe('h2');
  await waitFor('counter moves on', async () => (await w.counter()) > counterBefore, 10_000);
  expect(await w.verify(after.pid)).toBe('OK');
  expect(await w.starts()).toBe(1);
  expect(await w.copies()).toBe(1);
  expect((await cluster.ferry(['stop', 'secret'])).code).toBe(0);
});

test("CRIU's TLS page server: its client key crosses the bus only sealed with the migration's key, and the migration succeeds", async () => {
  const w = await MarkerWorkload.launch('pstls', 8);
  // Everything on the bus during the migration (the admin principal may read it all): requests, replies, frames.
  const everything: Array<{ subject: string; data: Buffer }> = [];
  const spy = cluster.nc.subscribe('>', { callback: (_e, msg) => everything.push({ subject: msg.subject, data: Buffer.from(msg.data) }) });
  await cluster.nc.flush();
  const res = await cluster.ferry(['migrate', 'pstls', '--to', 'h2', '--transport', 'page-server', '--json']);
  await cluster.nc.flush();
  spy.unsubscribe();
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2', transport: 'page-server' });
  // The checkpoint request carried the page server's credentials: certificates readable, the key only sealed.
  const checkpoint = everything.find((m) => m.subject === subjects.agent('h1', AgentVerb.CHECKPOINT));
  const tls = (decode(checkpoint!.data) as { pageServer?: { tls?: Record<string, unknown> } }).pageServer?.tls;
  expect(tls).toMatchObject({ caCert: expect.stringContaining('BEGIN CERTIFICATE'), cert: expect.stringContaining('BEGIN CERTIFICATE') });
  expect(tls!.key).toBeUndefined();
  expect((tls!.sealedKey as Uint8Array).byteLength).toBeGreaterThan(100);
  // No private key anywhere on the bus, in any message.
  expect(everything.length).toBeGreaterThan(4);
  expect(everything.filter((m) => m.data.includes('PRIVATE KEY')).map((m) => m.subject)).toEqual([]);
  const after = await where('pstls');
  expect(after.host).toBe('h2');
  expect(await w.verify(after.pid)).toBe('OK');
  expect(await w.starts()).toBe(1);
  expect((await cluster.ferry(['stop', 'pstls'])).code).toBe(0);
});

test('post-copy: nothing listens on loopback in either host while the memory follows (each CRIU is on a socket pair of its agent)', async () => {
  // The attack of finding 7: a local process connecting first to a loopback page server or relay
  // and serving or reading the workload's pages. There must be no such listener to connect to.
  const loopbackListeners = async (host: string): Promise<string[]> => {
    const netns = dev.readClusterState(CLUSTER)!.layout.hosts.find((h) => h.name === host)!.netns;
    const { stdout } = await execFileP('ip', ['netns', 'exec', netns, 'cat', '/proc/net/tcp', '/proc/net/tcp6']);
    return stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[3] === '0A' && /^(0100007F|0{24}01000000):/.test(f[1] ?? ''))
      .map((f) => `${host} ${f[1]}`);
  };
  const before = new Set([...(await loopbackListeners('h1')), ...(await loopbackListeners('h2'))]);
  const w = await MarkerWorkload.launch('lazyloop', 96);
  const seen = new Set<string>();
  let polling = true;
  let polls = 0;
  const poller = (async () => {
    while (polling) {
      for (const l of [...(await loopbackListeners('h1')), ...(await loopbackListeners('h2'))]) if (!before.has(l)) seen.add(l);
      polls++;
      await sleep(5);
    }
  })();
  const res = await cluster.ferry(['migrate', 'lazyloop', '--to', 'h2', '--restore', 'post-copy', '--json']);
  polling = false;
  await poller;
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2', restore: 'post-copy' });
  expect(polls).toBeGreaterThan(5);
  expect([...seen]).toEqual([]);
  const after = await where('lazyloop');
  expect(after.host).toBe('h2');
  expect(await w.verify(after.pid)).toBe('OK');
  expect(await w.starts()).toBe(1);
  expect((await cluster.ferry(['stop', 'lazyloop'])).code).toBe(0);
});

test('a frame forged by another principal during a migration fails it with TRANSFER_FAILED and rolls back intact', async () => {
  const w = await MarkerWorkload.launch('victim', 48);
  const before = await where('victim');
  // A principal with transfer rights (an agent's), but not the migration's key.
  const attacker = await connectAs(creds().agents.h1);
  let forged = 0;
  const sub = attacker.subscribe('ferry.v1.xfer.*.data', {
    callback: (_e, msg) => {
      if (forged > 0) return;
      forged += 1;
      const data = Buffer.from('evil');
      // Sealed with a key of its own, at the next position: only the key tells it apart.
      attacker.publish(msg.subject, encode({ v: PROTOCOL_VERSION, t: 'sealed', seq: 1, salt: randomBytes(4), box: randomBytes(64) }));
      attacker.publish(msg.subject, encode({ v: PROTOCOL_VERSION, t: 'chunk', seq: 1, path: 'pages-1.img', offset: 0, data, crc: 0 }));
    },
  });
  await attacker.flush();
  const res = await cluster.ferry(['migrate', 'victim', '--to', 'h2', '--transport', 'nats', '--json']);
  sub.unsubscribe();
  expect(forged).toBe(1);
  expect(res.json).toMatchObject({ state: 'rolled-back', error: { code: 'TRANSFER_FAILED' } });
  expect(res.json.error.message).toMatch(/not sealed with this migration's key|failed authentication|replayed/);
  const after = await where('victim');
  expect(after).toMatchObject({ host: 'h1', state: 'running', pid: before.pid });
  const c = await w.counter();
  await waitFor('thawed counter moves on', async () => (await w.counter()) > c, 10_000);
  expect(await w.verify(after.pid)).toBe('OK');
  expect(await w.copies()).toBe(1);
  // Work dirs on the target are gone after the rollback.
  expect((await readdir(`/run/ferry/work/${CLUSTER}/h2`)).filter((d) => d.startsWith('m-'))).toEqual([]);
  expect((await cluster.ferry(['stop', 'victim'])).code).toBe(0);
});

test('thousands of random and mutated requests to agents and coordinator: an error reply each, nothing crashes, hangs or escapes', async () => {
  let state = FUZZ_SEED;
  const rand = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (max: number) => Math.floor(rand() * max);
  const bytes = (len: number) => Buffer.from(Array.from({ length: len }, () => int(256)));
  const sentinel = `/tmp/ferry-fuzz-escape-${process.pid}`;
  const hostile = [`../../../..${sentinel}`, sentinel, '..', 'a/b', 'x\0y', '', 'A'.repeat(5000), '-rf', '$(touch /tmp/x)', 'h1.>', '*'];
  const randomValue = (depth = 0): unknown => {
    switch (int(depth > 2 ? 6 : 9)) {
      case 0: return int(2 ** 31) * (rand() < 0.5 ? -1 : 1);
      case 1: return rand() * 1e300;
      case 2: return hostile[int(hostile.length)];
      case 3: return bytes(int(64));
      case 4: return null;
      case 5: return rand() < 0.5;
      case 6: return Array.from({ length: int(4) }, () => randomValue(depth + 1));
      case 7: return Object.fromEntries(Array.from({ length: int(4) }, () => [hostile[int(hostile.length)] || 'k', randomValue(depth + 1)]));
      default: return { v: PROTOCOL_VERSION, [['name', 'workload', 'migrationId', 'host', 'argv', 'cwd', 'mounts'][int(7)]]: randomValue(depth + 1) };
    }
  };
  // Shapes of real requests naming things that do not exist, so even one a mutation leaves valid does nothing.
  const bases: Array<Record<string, unknown>> = [
    { v: 1, name: 'nosuch' },
    { v: 1, migrationId: 'm-nosuch', workload: 'nosuch' },
    { v: 1, workload: 'nosuch', to: 'nohost' },
    { v: 1, host: 'nohost' },
  ];
  /** `garbage`: not a request at all (random bytes, or a bare value/array); it must get an error reply. */
  const mutate = (): { body: Uint8Array; garbage: boolean } => {
    switch (int(3)) {
      case 0:
        return { body: bytes(1 + int(96)), garbage: true };
      case 1: {
        const value = randomValue();
        return { body: encode(value), garbage: value === null || typeof value !== 'object' || Array.isArray(value) || Buffer.isBuffer(value) };
      }
      default: {
        const m = { ...bases[int(bases.length)] };
        const keys = Object.keys(m);
        m[keys[1 + int(keys.length - 1)] ?? 'v'] = randomValue();
        if (int(4) === 0) m.v = randomValue();
        return { body: encode(m), garbage: false };
      }
    }
  };
  const agentVerbs = Object.values(AgentVerb);
  const coordVerbs = Object.values(CoordVerb).filter((v) => v !== CoordVerb.RUN && v !== CoordVerb.DRAIN && v !== CoordVerb.CORDON);
  const workDir = `/run/ferry/work/${CLUSTER}`;
  const workBefore = (await readdir(join(workDir, 'h1'))).sort();
  const started = Date.now();
  let replies = 0;
  let errorReplies = 0;
  const garbageReplies: boolean[] = [];
  const codes = new Map<string, number>();
  for (let sent = 0; sent < FUZZ_REQUESTS; sent += FUZZ_BATCH) {
    await Promise.all(
      Array.from({ length: FUZZ_BATCH }, async () => {
        const toAgent = rand() < 0.6;
        const subject = toAgent ? subjects.agent(rand() < 0.5 ? 'h1' : 'h2', agentVerbs[int(agentVerbs.length)]) : subjects.coord(coordVerbs[int(coordVerbs.length)]);
        const { body, garbage } = mutate();
        const reply = decode((await cluster.nc.request(subject, body, { timeout: 10_000 })).data) as { ok: boolean; error?: { code: string } };
        replies += 1;
        if (garbage) garbageReplies.push(reply.ok);
        if (!reply.ok) {
          errorReplies += 1;
          codes.set(reply.error!.code, (codes.get(reply.error!.code) ?? 0) + 1);
        }
      }),
    );
    // Heartbeats have no reply: garbage there must not disturb the coordinator either.
    for (let i = 0; i < 5; i++) cluster.nc.publish(subjects.heartbeat(rand() < 0.5 ? 'h1' : 'h2'), mutate().body);
  }
  const elapsedMs = Date.now() - started;
  process.stdout.write(`fuzz: ${replies} requests in ${elapsedMs} ms, ${errorReplies} error replies ${JSON.stringify(Object.fromEntries(codes))}\n`);
  expect(replies).toBe(Math.ceil(FUZZ_REQUESTS / FUZZ_BATCH) * FUZZ_BATCH);
  // Garbage always gets an error reply; a request that happens to be valid (e.g. `ps` with an extra field) may succeed.
  expect(garbageReplies.length).toBeGreaterThan(FUZZ_REQUESTS / 3);
  expect(garbageReplies.filter((ok) => ok)).toEqual([]);
  expect(errorReplies).toBeGreaterThan(replies * 0.8);
  expect(codes.get('INTERNAL') ?? 0).toBe(0);
  expect(elapsedMs).toBeLessThan(120_000);

  // Every process of the cluster still lives, and each answers a valid request.
  const st = dev.readClusterState(CLUSTER)!;
  expect(st.processes.filter((p) => !dev.isProcessAlive(p)).map((p) => `${p.role} ${p.host ?? ''}`)).toEqual([]);
  for (const host of ['h1', 'h2']) {
    const ps = decode((await cluster.nc.request(subjects.agent(host, AgentVerb.PS), encode({ v: PROTOCOL_VERSION }), { timeout: 5_000 })).data) as { ok: boolean };
    expect(ps.ok).toBe(true);
  }
  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.json.filter((h: { state: string }) => h.state === 'alive')).toHaveLength(2);
  // Nothing was written outside the work dirs, and no work dir was left behind.
  expect(existsSync(sentinel)).toBe(false);
  expect((await readdir(join(workDir, 'h1'))).sort()).toEqual(workBefore);
  expect((await readdir(join(workDir, 'h1'))).filter((d) => d.startsWith('m-'))).toEqual([]);
});
