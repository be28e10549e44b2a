/**
 * The coordinator's HTTP server: Prometheus metrics at /metrics, the OpenAPI description at
 * /openapi.json and a JSON API under /v1. Every API call is the NATS request the CLI sends
 * (`ferry.v1.coord.<verb>`), so validation, leadership and errors are exactly those of the NATS
 * verbs: whichever coordinator leads answers, even when this one stands by.
 * The operators' dashboard (`/`) and its event stream (`/v1/events/stream`) are on it too (dashboard.ts).
 * Every request for cluster data or an action needs a bearer token (http-auth.ts): `viewer` for
 * reads, `operator` for POSTs. Open to anyone: /healthz, /openapi.json and the dashboard's static
 * files (no cluster data in them), and /metrics only while no tokens file is configured.
 * `createHttpServer()` does not listen; `listenHttpServer()` does (tests drive the server in-process).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { CoordVerb, ErrorCode, FerryError, coordVerbs, request, subjects, toFerryError, silentLogger, type CoordReply, type Logger } from '@ferry/protocol';
import type { Registry } from 'prom-client';
import { Dashboard } from './dashboard';
import type { HttpAuthenticator, HttpPrincipal } from './http-auth';

/** Largest accepted request body: API bodies are a few fields. */
const MAX_BODY_BYTES = 64 * 1024;
/** The OpenAPI description, one file in the package (also linked from the README). */
export const OPENAPI_PATH = join(__dirname, '..', 'openapi.json');

/** HTTP status for each protocol error code. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  FAILED_PRECONDITION: 412,
  CONFLICT: 409,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
  // An agent-side step failed: the server was fine, something it depends on was not.
  CHECKPOINT_FAILED: 502,
  RESTORE_FAILED: 502,
  TRANSFER_FAILED: 502,
  INTERNAL: 500,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
};

export interface HttpApiOptions {
  /** How long a short call (hosts, status, cordon, drain's plan) may take. */
  requestTimeoutMs: number;
  /** How long POST /v1/migrations may wait for the migration to end. */
  migrateTimeoutMs: number;
}

export function defaultHttpApiOptions(): HttpApiOptions {
  return { requestTimeoutMs: 10_000, migrateTimeoutMs: 30 * 60_000 };
}

export interface HttpApiDeps {
  nc: NatsConnection;
  metrics: Registry;
  /** Checks each request's bearer token. */
  auth: HttpAuthenticator;
  options?: Partial<HttpApiOptions>;
  log?: Logger;
}

type Route = { method: string; pattern: RegExp; handle: (params: string[], body: Record<string, unknown>, url: URL) => Promise<[number, unknown]> };

export function createHttpServer(deps: HttpApiDeps): Server {
  const opts = { ...defaultHttpApiOptions(), ...deps.options };
  const log = deps.log ?? silentLogger;
  const openapi = readFileSync(OPENAPI_PATH, 'utf8');
  // The operators' dashboard at `/` and its event stream (/v1/events/stream), on this same port.
  const dashboard = new Dashboard(deps.nc, {}, log.child({ part: 'dashboard' }));
  // A stream was authenticated when it opened: after a change of tokens, every one must reconnect.
  deps.auth.onReload(() => dashboard.endStreams());
  // The body is the HTTP client's, unchecked here: the coordinator validates it as it does the CLI's.
  // The reply is checked against the verb's reply schema (TypeScript cannot follow `V` into the table).
  const ask = <V extends CoordVerb>(verb: V, body: Record<string, unknown>, timeoutMs = opts.requestTimeoutMs) =>
    request(deps.nc, subjects.coord(verb), body, coordVerbs[verb].reply, { timeoutMs }) as Promise<CoordReply<V>>;

  const routes: Route[] = [
    { method: 'GET', pattern: /^\/v1\/hosts$/, handle: async () => [200, await ask(CoordVerb.HOSTS, {})] },
    { method: 'GET', pattern: /^\/v1\/workloads$/, handle: async () => [200, await ask(CoordVerb.PS, {})] },
    { method: 'GET', pattern: /^\/v1\/migrations$/, handle: async () => [200, await ask(CoordVerb.STATUS, {})] },
    {
      method: 'GET',
      pattern: /^\/v1\/migrations\/([^/]+)$/,
      handle: async ([id]) => {
        const { migrations } = await ask(CoordVerb.STATUS, { id });
        return [200, { migration: migrations[0] }];
      },
    },
    { method: 'POST', pattern: /^\/v1\/migrations$/, handle: async (_p, body) => [200, await ask(CoordVerb.MIGRATE, body, opts.migrateTimeoutMs)] },
    { method: 'POST', pattern: /^\/v1\/hosts\/([^/]+)\/cordon$/, handle: async ([host]) => [200, await ask(CoordVerb.CORDON, { host })] },
    { method: 'POST', pattern: /^\/v1\/hosts\/([^/]+)\/uncordon$/, handle: async ([host]) => [200, await ask(CoordVerb.UNCORDON, { host })] },
    {
      method: 'POST',
      pattern: /^\/v1\/hosts\/([^/]+)\/drain$/,
      // The drain runs on; its results are lifecycle events (GET /v1/events, `ferry events`).
      handle: async ([host], body) => [202, await ask(CoordVerb.DRAIN, { drainId: `d-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`, ...body, host })],
    },
    {
      method: 'GET',
      pattern: /^\/v1\/events$/,
      handle: async (_p, _b, url) => {
        const limit = url.searchParams.get('limit');
        return [200, await ask(CoordVerb.EVENTS, limit === null ? {} : { limit: Number(limit) })];
      },
    },
  ];

  const server = createServer((req, res) => {
    void handle(req, res).catch((err) => {
      const fe = toFerryError(err);
      // Never the Authorization header: only who (when known), what and from where.
      if (fe.code === ErrorCode.UNAUTHENTICATED || fe.code === ErrorCode.PERMISSION_DENIED) {
        log.info({ code: fe.code, method: req.method, path: req.url?.split('?')[0], from: req.socket.remoteAddress, reason: fe.message }, 'HTTP request refused');
      } else {
        log.warn({ err: fe.message }, 'HTTP request failed');
      }
      if (!res.headersSent) sendError(res, fe, HTTP_STATUS[fe.code], req.headers.authorization !== undefined);
      else res.destroy();
    });
  });
  server.on('close', () => dashboard.close());
  return server;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    const reading = method === 'GET' || method === 'HEAD';
    // ---- open to anyone: nothing here tells about the cluster ----
    if (url.pathname === '/healthz' && reading) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(method === 'HEAD' ? undefined : '{"ok":true}');
      return;
    }
    if (dashboard.handle(req, res, url.pathname)) return;
    if (url.pathname === '/openapi.json' && method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(openapi);
      return;
    }
    if (url.pathname === '/metrics' && method === 'GET') {
      // Without a tokens file /metrics stays as it was (counts and durations, no commands or
      // environments), so a local Prometheus keeps scraping; with one, it needs a viewer token.
      if (deps.auth.configured) deps.auth.authenticate(req.headers.authorization);
      const text = await deps.metrics.metrics();
      res.writeHead(200, { 'content-type': deps.metrics.contentType });
      res.end(text);
      return;
    }
    // ---- everything else: a token first, before even saying whether the path exists ----
    const who = deps.auth.authenticate(req.headers.authorization);
    if (url.pathname === '/v1/events/stream' && reading) {
      dashboard.openStream(req, res);
      return;
    }
    if (url.pathname === '/v1/whoami' && method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: who.name, role: who.role } satisfies HttpPrincipal));
      return;
    }
    const matching = routes.filter((r) => r.pattern.test(url.pathname));
    if (matching.length === 0) throw new FerryError(ErrorCode.NOT_FOUND, `no such path: ${url.pathname}`);
    const route = matching.find((r) => r.method === method);
    if (!route) {
      res.setHeader('allow', matching.map((r) => r.method).join(', '));
      sendError(res, new FerryError(ErrorCode.INVALID_ARGUMENT, `${method} is not allowed on ${url.pathname}`), 405);
      return;
    }
    // Reads are a viewer's; every POST changes the cluster.
    deps.auth.authorize(who, method === 'GET' ? 'viewer' : 'operator', `${method} ${url.pathname}`);
    if (method !== 'GET') {
      const refused = crossSiteProblem(req);
      if (refused) {
        sendError(res, new FerryError(refused.status === 415 ? ErrorCode.INVALID_ARGUMENT : ErrorCode.FAILED_PRECONDITION, refused.why), refused.status);
        return;
      }
      log.info({ who: who.name, role: who.role, method, path: url.pathname }, 'HTTP action');
    }
    const params = (route.pattern.exec(url.pathname) ?? []).slice(1).map(decodeURIComponent);
    const body = method === 'POST' ? await readJsonBody(req) : {};
    const [status, payload] = await route.handle(params, body, url);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(payload));
  }
}

/**
 * Why a state-changing request must not be taken, or null. A browser on another site can make a
 * user's browser POST here (a form, or fetch in no-cors mode with `text/plain`): such a request
 * carries that site's Origin (or `Sec-Fetch-Site: cross-site`), and its body cannot be
 * `application/json` without a CORS preflight this server never grants. So: an Origin other than
 * this server's own is refused (403), and so is a body of any other type (415). The CLI, curl and
 * scripts send no Origin; the dashboard's own requests come from this origin.
 */
export function crossSiteProblem(req: Pick<IncomingMessage, 'headers'>): { status: 403 | 415; why: string } | null {
  const { origin, host } = req.headers;
  const site = req.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return { status: 403, why: `refused: a ${site} request from a browser` };
  if (origin !== undefined) {
    let originHost: string | null = null;
    try {
      originHost = new URL(origin).host;
    } catch {
      // 'null' (an opaque origin) and anything unparsable: never this server.
    }
    if (originHost === null || originHost !== host) return { status: 403, why: `refused: origin ${origin} is not this server` };
  }
  const length = Number(req.headers['content-length'] ?? 0);
  const chunked = req.headers['transfer-encoding'] !== undefined;
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if ((length > 0 || chunked) && type !== 'application/json') return { status: 415, why: `refused: a request body must be application/json, not ${type || 'untyped'}` };
  return null;
}

/** Listens on `address:port` (port 0: any free one) and resolves with the bound port. */
export function listenHttpServer(server: Server, address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** `tokenSent`: a 401 then says the token was the problem (RFC 6750's invalid_token), not its absence. */
function sendError(res: ServerResponse, err: FerryError, status = HTTP_STATUS[err.code], tokenSent = false): void {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (status === 401) headers['www-authenticate'] = tokenSent ? 'Bearer realm="ferry", error="invalid_token"' : 'Bearer realm="ferry"';
  res.writeHead(status, headers);
  res.end(JSON.stringify({ error: err.toBody() }));
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `request body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `request body is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'request body must be a JSON object');
  // The protocol version is the coordinator's business, not the HTTP client's.
  const { v: _v, ...rest } = value as Record<string, unknown>;
  return rest;
}
