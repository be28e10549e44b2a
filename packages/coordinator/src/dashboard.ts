/**
 * The operators' dashboard, served by the coordinator's HTTP server: static files from the
 * package's `dashboard/` folder (plain HTML, CSS and JavaScript, nothing to build, nothing fetched
 * from elsewhere) and a server-sent events stream fed from NATS (`events.lifecycle`, which the
 * leading coordinator publishes, and `events.progress`, which target agents publish while they
 * receive an image). Any coordinator can serve it, leader or standby: it only listens.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NatsConnection, Subscription } from 'nats';
import { z } from 'zod';
import { ErrorCode, FerryError, LifecycleEvent, decode, parseMessage, subjects, silentLogger, type Logger } from '@ferry/protocol';

/** The dashboard's files, beside `dist/` in the package (like openapi.json). */
export const DASHBOARD_DIR = join(__dirname, '..', 'dashboard');

/** Files served, by URL path. Nothing else under DASHBOARD_DIR is reachable (no path joins from the URL). */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/view-model.js': { file: 'view-model.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/dom.js': { file: 'dom.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/session.js': { file: 'session.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
  '/dashboard/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
};

/**
 * Only this origin: a browser showing the dashboard loads no font, script or style from anywhere else,
 * and the page cannot be framed by another site (its buttons migrate and drain).
 */
const CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** A comment line this often keeps idle streams open through proxies and lets the server notice gone clients. */
const SSE_KEEPALIVE_MS = 15_000;
/** How long a browser waits before reconnecting a dropped stream (the SSE `retry:` field). */
const SSE_RETRY_MS = 2_000;

export interface DashboardOptions {
  /** Most event streams open at once; more get 503 (each holds a socket and a write buffer). */
  maxStreams: number;
  /** A stream whose client reads slower than this many buffered bytes is closed (it reconnects and refetches). */
  maxBufferedBytes: number;
}

export function defaultDashboardOptions(): DashboardOptions {
  return { maxStreams: 64, maxBufferedBytes: 1024 * 1024 };
}

const ProgressMessage = z.object({ migrationId: z.string().max(64), bytes: z.number().nonnegative(), files: z.number().nonnegative().optional() });

/** What the stream sends: `event: lifecycle` (a LifecycleEvent) and `event: progress`. */
export interface ProgressData {
  migrationId: string;
  /** Cumulative bytes the target has received. */
  bytes: number;
  files?: number;
  /** When this coordinator saw it (ms since the epoch): the browser computes rates from it. */
  atMs: number;
}

/** Serves the dashboard's files and its event stream; `handle()` answers the requests it owns. */
export class Dashboard {
  private readonly assets = new Map<string, { body: Buffer; type: string }>();
  private readonly clients = new Set<ServerResponse>();
  private readonly subs: Subscription[] = [];
  private keepalive: NodeJS.Timeout | null = null;
  private readonly opts: DashboardOptions;
  private readonly log: Logger;

  constructor(private readonly nc: NatsConnection, options: Partial<DashboardOptions> = {}, log: Logger = silentLogger) {
    this.opts = { ...defaultDashboardOptions(), ...options };
    this.log = log;
    // Read once: the files are part of the installed package and small (tens of KiB).
    for (const [path, a] of Object.entries(ASSETS)) {
      try {
        this.assets.set(path, { body: readFileSync(join(DASHBOARD_DIR, a.file)), type: a.type });
      } catch (err) {
        throw new FerryError(ErrorCode.INTERNAL, `dashboard file ${a.file} missing from ${DASHBOARD_DIR}`, { cause: err });
      }
    }
  }

  /**
   * Answers GET and HEAD of `/` and `/dashboard/*` (static files, no cluster data: served to anyone,
   * so the page can ask for a token); returns false for any other request.
   */
  handle(req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const asset = this.assets.get(pathname);
    if (!asset) return false;
    res.writeHead(200, {
      'content-type': asset.type,
      'content-length': asset.body.length,
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      // The files change only with the coordinator: revalidate rather than pin a stale version.
      'cache-control': 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
    return true;
  }

  /** Open event streams (tests, shutdown). */
  get streamCount(): number {
    return this.clients.size;
  }

  /** Ends every stream and stops listening to NATS. */
  close(): void {
    this.endStreams();
  }

  /**
   * Ends every open stream (the tokens changed: each browser reconnects, and its token is checked
   * again); NATS is listened to again when the next stream opens.
   */
  endStreams(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
    this.unsubscribe();
  }

  /**
   * Answers `/v1/events/stream` (the caller has checked the client's token). Browsers read it with
   * fetch, not EventSource, so the token travels in the Authorization header, never in the URL.
   */
  openStream(req: IncomingMessage, res: ServerResponse): void {
    if (this.clients.size >= this.opts.maxStreams) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(JSON.stringify({ error: new FerryError(ErrorCode.UNAVAILABLE, `too many event streams open (${this.opts.maxStreams})`).toBody() }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    res.write(`retry: ${SSE_RETRY_MS}\n: ferry events\n\n`);
    this.clients.add(res);
    if (this.clients.size === 1) this.subscribe();
    const drop = () => {
      this.clients.delete(res);
      if (this.clients.size === 0) this.unsubscribe();
    };
    req.socket.setNoDelay(true);
    res.on('close', drop);
  }

  /** NATS is listened to only while someone watches: an idle coordinator decodes nothing. */
  private subscribe(): void {
    const on = (kind: string, parse: (data: Uint8Array) => { event: string; data: unknown }) =>
      this.subs.push(
        this.nc.subscribe(subjects.event(kind), {
          callback: (err, msg) => {
            if (err) return;
            try {
              const { event, data } = parse(msg.data);
              this.broadcast(event, data);
            } catch (e) {
              this.log.warn({ err: (e as Error).message, kind }, 'malformed event not streamed');
            }
          },
        }),
      );
    on('lifecycle', (d) => ({ event: 'lifecycle', data: parseMessage(LifecycleEvent, decode(d)) }));
    on('progress.*', (d) => {
      const p = parseMessage(ProgressMessage, decode(d));
      const data: ProgressData = { migrationId: p.migrationId, bytes: p.bytes, atMs: Date.now() };
      if (p.files !== undefined) data.files = p.files;
      return { event: 'progress', data };
    });
    this.keepalive = setInterval(() => this.write(': keepalive\n\n'), SSE_KEEPALIVE_MS);
    this.keepalive.unref();
  }

  private unsubscribe(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = null;
  }

  private broadcast(event: string, data: unknown): void {
    // JSON.stringify never emits a raw newline, so one `data:` line carries the whole document.
    this.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private write(chunk: string): void {
    for (const res of this.clients) {
      if (res.writableLength > this.opts.maxBufferedBytes) {
        this.log.warn({ buffered: res.writableLength }, 'event stream client too slow; closing its stream');
        res.end();
        continue;
      }
      res.write(chunk);
    }
  }
}
