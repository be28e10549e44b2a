import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { Registry } from 'prom-client';
import { createHttpServer, crossSiteProblem, listenHttpServer } from './http-api';
import { HttpAuthenticator } from './http-auth';
import { hashHttpToken, httpTokensFileText, newHttpToken } from './http-tokens';

const req = (headers: Record<string, string>) => ({ headers: { host: '127.0.0.1:9464', ...headers } }) as unknown as Pick<IncomingMessage, 'headers'>;

test('state-changing requests from another site are refused, whatever their body', () => {
  // A cross-site form or no-cors fetch: text/plain, with the attacking page's origin.
  expect(crossSiteProblem(req({ origin: 'https://evil.example', 'content-type': 'text/plain', 'content-length': '40' }))).toMatchObject({ status: 403 });
  expect(crossSiteProblem(req({ origin: 'null', 'content-length': '0' }))).toMatchObject({ status: 403 });
  expect(crossSiteProblem(req({ 'sec-fetch-site': 'cross-site' }))).toMatchObject({ status: 403 });
  // Same host, other port: another origin.
  expect(crossSiteProblem(req({ origin: 'http://127.0.0.1:8080' }))).toMatchObject({ status: 403 });
});

test('a body that is not JSON is refused (415); the dashboard, the CLI, curl and scripts get through', () => {
  expect(crossSiteProblem(req({ 'content-type': 'text/plain', 'content-length': '12' }))).toMatchObject({ status: 415 });
  expect(crossSiteProblem(req({ 'content-type': 'application/x-www-form-urlencoded', 'transfer-encoding': 'chunked' }))).toMatchObject({ status: 415 });
  expect(crossSiteProblem(req({ origin: 'http://127.0.0.1:9464', 'sec-fetch-site': 'same-origin', 'content-type': 'application/json', 'content-length': '20' }))).toBeNull();
  expect(crossSiteProblem(req({ 'content-type': 'application/json; charset=utf-8', 'content-length': '20' }))).toBeNull();
  expect(crossSiteProblem(req({}))).toBeNull();
});

describe('tokens and roles', () => {
  const viewer = newHttpToken();
  const operator = newHttpToken();
  let dir: string;
  let server: Server;
  let base: string;
  let auth: HttpAuthenticator;
  let file: string;
  const bothTokens = () => httpTokensFileText([
    { name: 'grafana', role: 'viewer', sha256: hashHttpToken(viewer) },
    { name: 'alice', role: 'operator', sha256: hashHttpToken(operator) },
  ]);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-http-api-'));
    file = join(dir, 'tokens.json');
    writeFileSync(file, bothTokens(), { mode: 0o600 });
    auth = new HttpAuthenticator(file);
    // No NATS: every request below is answered (or refused) before a verb would be asked.
    const nc = {
      request: () => Promise.reject(new Error('no NATS in this test')),
      subscribe: () => ({ unsubscribe: () => undefined }),
    } as unknown as NatsConnection;
    server = createHttpServer({ nc, metrics: new Registry(), auth });
    base = `http://127.0.0.1:${await listenHttpServer(server, '127.0.0.1', 0)}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const call = async (method: string, path: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base}${path}`, { method, headers });
    const text = await res.text();
    return { status: res.status, auth: res.headers.get('www-authenticate'), json: text.startsWith('{') ? JSON.parse(text) : text };
  };
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  test('no token or an unknown one: 401 with WWW-Authenticate and a clear error; nothing about the cluster', async () => {
    expect(await call('GET', '/v1/workloads')).toEqual({
      status: 401,
      auth: 'Bearer realm="ferry"',
      json: { error: { code: 'UNAUTHENTICATED', message: expect.stringContaining('bearer token is required') } },
    });
    expect(await call('POST', '/v1/hosts/h1/drain', bearer(newHttpToken()))).toEqual({
      status: 401,
      auth: 'Bearer realm="ferry", error="invalid_token"',
      json: { error: { code: 'UNAUTHENTICATED', message: 'unknown or revoked token' } },
    });
    // Even whether a path exists is for token holders.
    expect((await call('GET', '/v1/nowhere')).status).toBe(401);
    expect((await call('GET', '/v1/events/stream')).status).toBe(401);
    expect((await call('GET', '/metrics')).status).toBe(401);
  });

  test('a viewer reads but may not act (403); an operator gets past the checks; cross-site is still refused', async () => {
    expect(await call('GET', '/v1/whoami', bearer(viewer))).toMatchObject({ status: 200, json: { name: 'grafana', role: 'viewer' } });
    expect((await call('GET', '/metrics', bearer(viewer))).status).toBe(200);
    for (const path of ['/v1/migrations', '/v1/hosts/h2/cordon', '/v1/hosts/h2/drain']) {
      expect(await call('POST', path, bearer(viewer))).toEqual({
        status: 403,
        auth: null,
        json: { error: { code: 'PERMISSION_DENIED', message: `refused: token grafana has role viewer; POST ${path} needs the operator role` } },
      });
    }
    expect(await call('GET', '/v1/whoami', bearer(operator))).toMatchObject({ status: 200, json: { name: 'alice', role: 'operator' } });
    const crossSite = await call('POST', '/v1/hosts/h2/cordon', { ...bearer(operator), origin: 'https://evil.example' });
    expect(crossSite).toMatchObject({ status: 403, json: { error: { message: expect.stringMatching(/^refused: origin/) } } });
    // Past every check, the verb goes to NATS (absent here: 503, not 401 or 403).
    expect((await call('POST', '/v1/hosts/h2/cordon', bearer(operator))).status).toBe(503);
  });

  test('an open event stream ends when the tokens change, and a revoked token cannot open it again', async () => {
    const res = await fetch(`${base}/v1/events/stream`, { headers: bearer(viewer) });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    expect(Buffer.from((await reader.read()).value!).toString()).toMatch(/^retry: /);
    writeFileSync(file, httpTokensFileText([{ name: 'alice', role: 'operator', sha256: hashHttpToken(operator) }]), { mode: 0o600 });
    auth.reload();
    let done = false;
    while (!done) done = (await reader.read()).done;
    expect((await fetch(`${base}/v1/events/stream`, { headers: bearer(viewer) })).status).toBe(401);
    writeFileSync(file, bothTokens(), { mode: 0o600 });
    auth.reload();
  });

  test('health, the OpenAPI description and the dashboard page need no token', async () => {
    expect(await call('GET', '/healthz')).toMatchObject({ status: 200, json: { ok: true } });
    expect((await call('GET', '/openapi.json')).status).toBe(200);
    expect((await call('GET', '/')).status).toBe(200);
  });

  test('without a tokens file /metrics stays open and the API is closed', async () => {
    const open = createHttpServer({ nc: {} as NatsConnection, metrics: new Registry(), auth: new HttpAuthenticator(null) });
    const port = await listenHttpServer(open, '127.0.0.1', 0);
    try {
      expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
      const res = await fetch(`http://127.0.0.1:${port}/v1/hosts`, { headers: bearer(operator) });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/FERRY_HTTP_TOKENS/);
    } finally {
      await new Promise((r) => open.close(r));
    }
  });
});
