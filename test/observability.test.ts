/**
 * Metrics, the HTTP API and lifecycle events, against a real cluster: attacks on the API without
 * a token, with a made-up one and with a viewer's, a token rotated while the coordinator runs,
 * then a migration and a drain driven over HTTP with the operator token, and what /metrics,
 * `ferry events` and a lost host show.
 */
import { writeFileSync } from 'node:fs';
import { hashHttpToken, httpTokensFileText, newHttpToken } from '@ferry/coordinator';
import { dev } from '@ferry/dev-cluster';
import type { LifecycleEvent } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import type { JsonDoc } from './helpers/json-doc';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

let cluster: TestCluster;
const workloads: CounterWorkload[] = [];

beforeAll(async () => {
  cluster = await startTestCluster('tobs', 246);
});

afterAll(async () => {
  await cluster?.stop();
  for (const w of workloads) await w.remove();
});

/** A call with `token` (default: the cluster's operator token; null: none). */
async function http(method: string, path: string, body?: unknown, token: string | null = cluster.httpTokens.operator): Promise<{ status: number; json: JsonDoc; authenticate: string | null }> {
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${cluster.httpUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined, authenticate: res.headers.get('www-authenticate') };
}

async function metrics(): Promise<string> {
  // Prometheus scrapes with a viewer token.
  const res = await fetch(`${cluster.httpUrl}/metrics`, { headers: { authorization: `Bearer ${cluster.httpTokens.viewer}` } });
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one sample line, e.g. `ferry_migrations_total{result="succeeded"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function ps(name: string) {
  const { json } = await http('GET', '/v1/workloads');
  return (json.workloads as Array<{ name: string; host: string; state: string; pid: number }>).filter((w) => w.name === name);
}

test('zero trust, HTTP: no token, a made-up token and a viewer token cannot read or act (401/403, clear errors); the workload runs on, exactly once', async () => {
  const w = await CounterWorkload.create();
  workloads.push(w);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'guarded', '--env', 'SECRET_FOR_TEST=s3cr3t-value', '--json', '--', ...w.argv(16)]);
  expect(run.code).toBe(0);
  await w.advancesPast(20, 30_000);
  const [before] = await ps('guarded');
  expect(before).toMatchObject({ host: 'h1', state: 'running' });
  const eventsBefore = ((await http('GET', '/v1/events?limit=1000')).json.events as unknown[]).length;

  // 1. No token: the workload list (argv, env) is not readable, nor the event stream or /metrics.
  const anonymous = await fetch(`${cluster.httpUrl}/v1/workloads`);
  const anonymousText = await anonymous.text();
  expect(anonymous.status).toBe(401);
  expect(anonymous.headers.get('www-authenticate')).toBe('Bearer realm="ferry"');
  expect(JSON.parse(anonymousText)).toEqual({ error: { code: 'UNAUTHENTICATED', message: expect.stringContaining('a bearer token is required') } });
  expect(anonymousText).not.toMatch(/guarded|s3cr3t/);
  expect((await fetch(`${cluster.httpUrl}/v1/events/stream`)).status).toBe(401);
  expect((await fetch(`${cluster.httpUrl}/metrics`)).status).toBe(401);

  // 2. A made-up token on a drain: 401, nothing cordoned, nothing moved.
  const forged = await http('POST', '/v1/hosts/h1/drain', {}, newHttpToken());
  expect(forged).toEqual({ status: 401, authenticate: 'Bearer realm="ferry", error="invalid_token"', json: { error: { code: 'UNAUTHENTICATED', message: 'unknown or revoked token' } } });
  expect((await http('POST', '/v1/hosts/h1/drain', {}, 'Bearer-looking-garbage')).status).toBe(401);

  // 3. The viewer token reads, but a migration, a cordon or a drain is 403.
  const viewer = cluster.httpTokens.viewer;
  expect((await http('GET', '/v1/workloads', undefined, viewer)).status).toBe(200);
  expect((await http('GET', '/v1/whoami', undefined, viewer)).json).toEqual({ name: 'dev-viewer', role: 'viewer' });
  const migrate = await http('POST', '/v1/migrations', { workload: 'guarded', to: 'h2' }, viewer);
  expect(migrate).toEqual({
    status: 403,
    authenticate: null,
    json: { error: { code: 'PERMISSION_DENIED', message: 'refused: token dev-viewer has role viewer; POST /v1/migrations needs the operator role' } },
  });
  for (const path of ['/v1/hosts/h1/cordon', '/v1/hosts/h1/drain']) {
    expect((await http('POST', path, {}, viewer)).json.error.code).toBe('PERMISSION_DENIED');
  }

  // None of it changed anything: same host, same process, one copy, still counting; no event.
  const counter = await w.counter();
  expect(await w.advancesPast(counter)).toBeGreaterThan(counter);
  const [after] = await ps('guarded');
  expect(after).toMatchObject({ host: 'h1', state: 'running', pid: before.pid });
  expect(await w.runningCopies()).toEqual([before.pid]);
  expect(await w.starts()).toBe(1);
  expect((await http('GET', '/v1/hosts')).json.hosts.map((h: { cordoned: boolean }) => h.cordoned)).toEqual([false, false]);
  expect(((await http('GET', '/v1/events?limit=1000')).json.events as unknown[]).length).toBe(eventsBefore);

  // 4. The operator token acts.
  expect((await http('POST', '/v1/hosts/h1/cordon')).json.host).toMatchObject({ name: 'h1', cordoned: true });
  expect((await http('POST', '/v1/hosts/h1/uncordon')).json.host).toMatchObject({ name: 'h1', cordoned: false });

  // 5. Rotation while the coordinator runs: a new viewer token in the tokens file; the old one is refused within seconds.
  const rotated = newHttpToken();
  writeFileSync(
    cluster.httpTokensFile,
    httpTokensFileText([
      { name: 'dev-viewer', role: 'viewer', sha256: hashHttpToken(rotated) },
      { name: 'dev-operator', role: 'operator', sha256: hashHttpToken(cluster.httpTokens.operator) },
    ]),
    { mode: 0o600 },
  );
  await waitFor('the old viewer token refused', async () => (await http('GET', '/v1/hosts', undefined, viewer)).status === 401, 10_000);
  expect((await http('GET', '/v1/hosts', undefined, rotated)).status).toBe(200);
  cluster.httpTokens.viewer = rotated;
  // SIGHUP re-reads the file at once and does not stop the coordinator (Node's default for SIGHUP would).
  const coordinator = dev.readClusterState(cluster.name)!.processes.find((p) => p.role === 'coordinator')!;
  process.kill(coordinator.pid, 'SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  expect(dev.isProcessAlive(coordinator)).toBe(true);
  expect((await http('GET', '/v1/whoami', undefined, rotated)).json).toEqual({ name: 'dev-viewer', role: 'viewer' });

  expect((await cluster.ferry(['stop', 'guarded'])).code).toBe(0);
});

test('the HTTP API migrates and drains; metrics and events show it; a dead agent shows as lost', async () => {
  const spec = await http('GET', '/openapi.json');
  expect(spec.status).toBe(200);
  expect(spec.json.openapi).toMatch(/^3\./);
  for (const p of ['/metrics', '/v1/hosts', '/v1/workloads', '/v1/migrations', '/v1/migrations/{id}', '/v1/hosts/{host}/drain', '/v1/hosts/{host}/cordon', '/v1/events']) {
    expect(spec.json.paths[p]).toBeDefined();
  }

  const hosts = await http('GET', '/v1/hosts');
  expect(hosts.status).toBe(200);
  expect(hosts.json.hosts.map((h: { name: string; state: string }) => `${h.name}:${h.state}`)).toEqual(['h1:alive', 'h2:alive']);

  // Errors carry the protocol's codes and map to HTTP statuses.
  const unknown = await http('POST', '/v1/migrations', { workload: 'nosuch', to: 'h2' });
  expect(unknown).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND', message: expect.stringContaining('nosuch') } } });
  expect((await http('POST', '/v1/migrations', {})).json.error.code).toBe('INVALID_ARGUMENT');
  expect((await http('POST', '/v1/migrations', {})).status).toBe(400);
  expect((await http('POST', '/v1/migrations', 'not json')).status).toBe(400);
  expect((await http('POST', '/v1/hosts/h9/cordon')).status).toBe(404);
  expect((await http('GET', '/v1/nowhere')).status).toBe(404);
  expect((await http('DELETE', '/v1/hosts')).status).toBe(405);

  const w = await CounterWorkload.create();
  workloads.push(w);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'obs', '--json', '--', ...w.argv(16)]);
  expect(run.code).toBe(0);
  await w.advancesPast(20, 30_000);

  // Migration over HTTP.
  let counterBefore = await w.counter();
  const mig = await http('POST', '/v1/migrations', { workload: 'obs', to: 'h2', requestId: 'http-obs-1' });
  expect(mig.status).toBe(200);
  expect(mig.json.migration).toMatchObject({ workload: 'obs', from: 'h1', to: 'h2', state: 'succeeded' });
  const id = mig.json.migration.id as string;
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.starts()).toBe(1);
  let [entry] = await ps('obs');
  expect(entry).toMatchObject({ host: 'h2', state: 'running' });
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');
  const one = await http('GET', `/v1/migrations/${id}`);
  expect(one.json.migration).toMatchObject({ id, state: 'succeeded' });
  expect((await http('GET', '/v1/migrations/m-nosuch')).status).toBe(404);

  const text = await waitFor('metrics of the migration', async () => {
    const t = await metrics();
    return sample(t, 'ferry_migrations_total{result="succeeded"}') === 1 ? t : undefined;
  });
  expect(sample(text, 'ferry_migrations_total{result="failed"}')).toBe(0);
  expect(sample(text, 'ferry_migration_downtime_seconds_count')).toBe(1);
  expect(sample(text, 'ferry_migration_downtime_seconds_sum')).toBeGreaterThan(0);
  expect(sample(text, 'ferry_migration_duration_seconds_count{result="succeeded"}')).toBe(1);
  expect(sample(text, 'ferry_transfer_bytes_total')).toBeGreaterThan(16 * 1024 * 1024);
  expect(sample(text, 'ferry_criu_dump_duration_seconds_count{host="h1"}')).toBe(1);
  expect(sample(text, 'ferry_criu_restore_duration_seconds_count{host="h2"}')).toBe(1);
  expect(sample(text, 'ferry_transfer_throughput_bytes_per_second_count{host="h1"}')).toBe(1);
  expect(sample(text, 'ferry_hosts{state="alive"}')).toBe(2);
  expect(sample(text, 'ferry_hosts{state="lost"}')).toBe(0);
  expect(sample(text, 'ferry_migrations_in_flight')).toBe(0);
  await waitFor('workload gauge', async () => sample(await metrics(), 'ferry_workloads{host="h2"}') === 1);

  // Drain over HTTP: h2's only workload goes back to h1; results arrive as events.
  counterBefore = await w.counter();
  const drain = await http('POST', '/v1/hosts/h2/drain', { drainId: 'd-obs' });
  expect(drain).toMatchObject({ status: 202, json: { drainId: 'd-obs', workloads: ['obs'] } });
  await waitFor('drain finished', async () => {
    const { json } = await http('GET', '/v1/events?limit=50');
    return (json.events as Array<{ type: string; step: string; drainId?: string }>).find((e) => e.type === 'drain' && e.drainId === 'd-obs');
  }, 60_000);
  [entry] = await ps('obs');
  expect(entry).toMatchObject({ host: 'h1', state: 'running' });
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');
  expect((await http('GET', '/v1/hosts')).json.hosts.find((h: { name: string }) => h.name === 'h2').cordoned).toBe(true);
  const unc = await http('POST', '/v1/hosts/h2/uncordon');
  expect(unc.status).toBe(200);
  expect(unc.json.host).toMatchObject({ name: 'h2', cordoned: false });

  // `ferry events --json`: the documents, oldest first, each migration step in order.
  const ev = await cluster.ferry(['events', '--json', '--limit', '200']);
  expect(ev.code).toBe(0);
  const events = ev.json as LifecycleEvent[];
  for (const e of events) {
    expect(e).toEqual(expect.objectContaining({ type: expect.any(String), step: expect.any(String), at: expect.any(String), key: expect.any(String), figures: expect.any(Object) }));
  }
  const mine = events.filter((e) => e.migrationId === id);
  expect(mine.map((e) => e.step)).toEqual(['requested', 'preflight-passed', 'frozen', 'transferred', 'restored', 'succeeded']);
  for (const e of mine) expect(e).toMatchObject({ type: 'migration', key: 'obs', workload: 'obs', from: 'h1', to: 'h2', requestId: 'http-obs-1' });
  const done = mine[mine.length - 1];
  expect(done.figures.downtimeMs).toBeGreaterThan(0);
  expect(done.figures.bytesTransferred).toBeGreaterThan(16 * 1024 * 1024);
  expect(done.figures.totalMs).toBeGreaterThanOrEqual(done.figures.downtimeMs);
  expect(events.some((e) => e.type === 'host' && e.step === 'cordoned' && e.host === 'h2')).toBe(true);
  expect(events.some((e) => e.type === 'host' && e.step === 'uncordoned' && e.host === 'h2')).toBe(true);
  const text2 = await metrics();
  expect(sample(text2, 'ferry_migrations_total{result="succeeded"}')).toBe(2);

  // A dead agent: lost in the metrics and in the events.
  await dev.killHost(cluster.name, 'h2');
  await waitFor('h2 lost in the metrics', async () => sample(await metrics(), 'ferry_hosts{state="lost"}') === 1, 20_000);
  const after = await cluster.ferry(['events', '--json']);
  expect((after.json as LifecycleEvent[]).some((e) => e.type === 'host' && e.step === 'lost' && e.key === 'h2')).toBe(true);
  expect((await cluster.ferry(['stop', 'obs'])).code).toBe(0);
});

test('a cross-site browser request cannot migrate, cordon or drain even with the operator token (Origin and Content-Type checked), and changes nothing', async () => {
  const before = (await http('GET', '/v1/hosts')).json.hosts as Array<{ name: string; cordoned: boolean }>;
  const attempts: Array<[string, Record<string, string>, string | undefined]> = [
    // What a page on another site can make a browser send without a CORS preflight.
    ['/v1/hosts/h1/cordon', { origin: 'https://evil.example', 'content-type': 'text/plain' }, '{}'],
    ['/v1/hosts/h1/drain', { origin: 'https://evil.example' }, undefined],
    ['/v1/migrations', { 'content-type': 'text/plain' }, JSON.stringify({ workload: 'nope', to: 'h2' })],
    ['/v1/hosts/h1/cordon', { origin: 'null' }, undefined],
  ];
  for (const [path, headers, body] of attempts) {
    // Even with the token (a browser would not have it: it is in the dashboard's sessionStorage, not a cookie).
    const res = await fetch(`${cluster.httpUrl}${path}`, { method: 'POST', headers: { ...headers, authorization: `Bearer ${cluster.httpTokens.operator}` }, body });
    expect([path, res.status]).toEqual([path, headers.origin ? 403 : 415]);
    expect(((await res.json()) as JsonDoc).error.message).toMatch(/refused/);
  }
  const after = (await http('GET', '/v1/hosts')).json.hosts as Array<{ name: string; cordoned: boolean }>;
  expect(after.map((h) => [h.name, h.cordoned])).toEqual(before.map((h) => [h.name, h.cordoned]));
});
