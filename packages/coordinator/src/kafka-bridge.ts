/**
 * Kafka for autoscalers: every lifecycle event is produced to `ferry.events` (JSON, keyed by
 * workload, host events by host, so one key's events stay in one partition, in order), and
 * requests are consumed from `ferry.requests`:
 *   {"requestId": "r1", "kind": "migrate", "workload": "w", "to": "h2"}   (`to` optional: placed)
 *   {"requestId": "r2", "kind": "drain", "host": "h1"}
 * A request id is handled once: a repeat yields a `duplicate` request event and starts nothing.
 * Every request is signed by its requester (`auth`: requester, issuedAt, HMAC-SHA256 tag; the format
 * is in @ferry/protocol kafka-request-auth.ts): one without a valid tag from a requester in
 * `requestKeys`, signed too long ago, or whose tag was already seen (a replay) yields a `rejected`
 * event (UNAUTHENTICATED) and starts nothing. The broker's ACLs decide who may produce at all;
 * the tag is how the coordinator knows who asks, since a consumer never sees the producer's principal.
 * An accepted migrate request shows as the migration's `requested` event (with the request id);
 * an accepted drain as an `accepted` request event. A request that cannot start (malformed, unknown workload, ...) yields a `rejected` event with
 * the reason. Requests go to the coordinator as the CLI's NATS requests, so the leader runs them
 * whichever coordinator consumed them.
 */
import { readFileSync } from 'node:fs';
import { Kafka, logLevel, type Consumer, type Producer, type LogEntry, type SASLOptions } from 'kafkajs';
import type { NatsConnection } from 'nats';
import { z } from 'zod';
import {
  CoordVerb,
  ErrorCode,
  Id,
  FerryError,
  KafkaRequestAuth,
  kafkaRequestAuthProblem,
  requestCoordVerb,
  toFerryError,
  silentLogger,
  type KafkaCredentials,
  type LifecycleEvent,
  type Logger,
} from '@ferry/protocol';
import type { EventJournal } from './lifecycle-events';
import type { MigrationStore } from './migration-store';

export interface KafkaBridgeOptions {
  /** host:port of each bootstrap broker. */
  brokers: string[];
  eventsTopic: string;
  requestsTopic: string;
  /** Consumer group of every coordinator of the cluster (one of them gets each request). */
  groupId: string;
  clientId: string;
  /** How long a migration started from a request may run. */
  migrateTimeoutMs: number;
  /**
   * A request older than this (its Kafka timestamp) is rejected as stale. Far below the 24 h for
   * which request ids are remembered: a new consumer group reading the topic from the beginning,
   * or anyone re-producing an old message, cannot replay a drain or a migration.
   */
  maxRequestAgeMs: number;
  /** TLS to the brokers: null is plain TCP; `caFile` null trusts the system's CAs. */
  tls: { caFile: string | null } | null;
  /** SASL credentials (FERRY_KAFKA_CREDENTIALS); null: none. */
  sasl: KafkaCredentials | null;
  /** Each requester's request keys (FERRY_KAFKA_REQUEST_KEYS); a request signed by no key here is rejected. */
  requestKeys: ReadonlyMap<string, readonly Buffer[]>;
}

/** Ten minutes: a request waits that long at most for a coordinator to read it. */
export const DEFAULT_MAX_REQUEST_AGE_MS = 10 * 60_000;

/** Why a request produced at `timestampMs` (Kafka's message time) is too old to act on now, or null. */
export function staleRequestProblem(timestampMs: number, nowMs: number, maxAgeMs: number): string | null {
  if (!Number.isFinite(timestampMs)) return 'the message has no timestamp';
  const ageMs = nowMs - timestampMs;
  return ageMs > maxAgeMs ? `the request is ${Math.round(ageMs / 1000)} s old, older than ${Math.round(maxAgeMs / 1000)} s: not replayed` : null;
}

export function defaultKafkaBridgeOptions(): KafkaBridgeOptions {
  return {
    brokers: ['127.0.0.1:9092'],
    eventsTopic: 'ferry.events',
    requestsTopic: 'ferry.requests',
    groupId: 'ferry-coordinator',
    clientId: 'ferry-coordinator',
    migrateTimeoutMs: 30 * 60_000,
    maxRequestAgeMs: DEFAULT_MAX_REQUEST_AGE_MS,
    tls: null,
    sasl: null,
    requestKeys: new Map(),
  };
}

/** kafkajs's `ssl` and `sasl` client options for these settings. */
export function kafkaClientSecurity(tls: KafkaBridgeOptions['tls'], sasl: KafkaCredentials | null): { ssl?: true | { ca: Buffer[] }; sasl?: SASLOptions } {
  const out: { ssl?: true | { ca: Buffer[] }; sasl?: SASLOptions } = {};
  if (tls) out.ssl = tls.caFile ? { ca: [readFileSync(tls.caFile)] } : true;
  if (sasl) out.sasl = { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } as SASLOptions;
  return out;
}

/**
 * Why a request's `auth` is not good enough to act on, or null. The tag must come from a known
 * requester's key, over this request, signed within `maxAgeMs` (see @ferry/protocol).
 */
export function requestAuthProblem(raw: Record<string, unknown>, req: KafkaRequest, keys: ReadonlyMap<string, readonly Buffer[]>, nowMs: number, maxAgeMs: number): string | null {
  if (keys.size === 0) return 'this coordinator knows no request keys (FERRY_KAFKA_REQUEST_KEYS): no request is accepted';
  return kafkaRequestAuthProblem(req, raw.auth, keys, nowMs, maxAgeMs);
}

/** What `ferry.requests` carries. */
export const KafkaRequest = z.discriminatedUnion('kind', [
  z.object({ requestId: Id, kind: z.literal('migrate'), workload: z.string().min(1).max(63), to: z.string().min(1).max(63).optional() }),
  z.object({ requestId: Id, kind: z.literal('drain'), host: z.string().min(1).max(63) }),
]);
export type KafkaRequest = z.infer<typeof KafkaRequest>;

export interface KafkaBridgeDeps {
  nc: NatsConnection;
  journal: EventJournal;
  store: MigrationStore;
  log?: Logger;
}

export class KafkaBridge {
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly consumer: Consumer;
  /** Sends are chained: kafkajs may reorder concurrent sends of one key. */
  private sending: Promise<void> = Promise.resolve();
  private readonly running = new Set<Promise<void>>();
  private readonly log: Logger;

  constructor(
    private readonly opts: KafkaBridgeOptions,
    private readonly deps: KafkaBridgeDeps,
  ) {
    this.log = deps.log ?? silentLogger;
    const log = this.log;
    this.kafka = new Kafka({
      clientId: opts.clientId,
      brokers: opts.brokers,
      ...kafkaClientSecurity(opts.tls, opts.sasl),
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => {
        const { message, ...rest } = entry.log;
        if (entry.level <= logLevel.ERROR) log.warn({ kafka: entry.namespace, ...rest }, message);
      },
    });
    // Idempotent producer: a retried send is not written twice, and order per partition holds.
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    this.consumer = this.kafka.consumer({ groupId: opts.groupId });
  }

  /** Creates the topics when missing, connects, and starts consuming requests. */
  async start(): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const have = new Set(await admin.listTopics());
      const topics = [this.opts.eventsTopic, this.opts.requestsTopic].filter((t) => !have.has(t)).map((topic) => ({ topic, numPartitions: 1 }));
      if (topics.length > 0) await admin.createTopics({ topics, waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
    await this.producer.connect();
    this.deps.journal.addSink((ev) => this.send(ev));
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.opts.requestsTopic, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        // Never throws: a bad request must not stall or crash the consumer.
        await this.handleRequest(message.value?.toString('utf8') ?? '', Number(message.timestamp)).catch((err) =>
          this.log.error({ err: (err as Error).message }, 'request handling failed'),
        );
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect().catch(() => undefined);
    await Promise.allSettled([...this.running]);
    await this.sending;
    await this.producer.disconnect().catch(() => undefined);
  }

  private send(ev: LifecycleEvent): void {
    this.sending = this.sending
      .then(() => this.producer.send({ topic: this.opts.eventsTopic, messages: [{ key: ev.key, value: JSON.stringify(ev) }] }))
      .then(
        () => undefined,
        (err) => this.log.error({ err: (err as Error).message, step: ev.step, key: ev.key }, 'event not produced to Kafka'),
      );
  }

  /**
   * Acts on one message of the requests topic (`text`, produced at `timestampMs`): each outcome is
   * a request or migration event. What the consumer calls for every message; public for tests.
   */
  async handleRequest(text: string, timestampMs: number): Promise<void> {
    let req: KafkaRequest;
    let raw: Record<string, unknown> = {};
    try {
      const value: unknown = JSON.parse(text);
      if (value && typeof value === 'object' && !Array.isArray(value)) raw = value as Record<string, unknown>;
      const parsed = KafkaRequest.safeParse(value);
      if (!parsed.success) {
        const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(request)'}: ${i.message}`).join('; ');
        throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid request: ${issues}`);
      }
      req = parsed.data;
      const stale = staleRequestProblem(timestampMs, Date.now(), this.opts.maxRequestAgeMs);
      if (stale) throw new FerryError(ErrorCode.FAILED_PRECONDITION, stale);
      const unauthenticated = requestAuthProblem(raw, req, this.opts.requestKeys, Date.now(), this.opts.maxRequestAgeMs);
      if (unauthenticated) throw new FerryError(ErrorCode.UNAUTHENTICATED, `request refused: ${unauthenticated}`);
    } catch (err) {
      const fe = err instanceof SyntaxError ? new FerryError(ErrorCode.INVALID_ARGUMENT, `request is not JSON: ${err.message}`, { cause: err }) : toFerryError(err);
      await this.report('rejected', raw, fe);
      return;
    }
    const claimKey = req.kind === 'drain' ? `drain:${req.requestId}` : req.requestId;
    const earlier = await this.deps.store.requestHolder(claimKey);
    if (earlier) {
      await this.report('duplicate', req, undefined, earlier);
      return;
    }
    // A tag is good once: the same signed message produced again (within the age limit, e.g. after
    // its first run failed and released the request id) is a replay. Kept as long as request ids.
    const auth = KafkaRequestAuth.parse(raw.auth);
    if (await this.deps.store.claimRequest(`kafka-tag:${auth.mac}`, req.requestId)) {
      await this.report('rejected', req, new FerryError(ErrorCode.UNAUTHENTICATED, 'request refused: this signed request was already read once (a replay); sign it again to retry'));
      return;
    }
    if (req.kind === 'drain') {
      // Drains have no request record of their own; the claim makes a repeated id a no-op.
      if (await this.deps.store.claimRequest(claimKey, req.requestId)) return this.report('duplicate', req);
      try {
        await requestCoordVerb(this.deps.nc, CoordVerb.DRAIN, { host: req.host, drainId: req.requestId }, { timeoutMs: 10_000 });
        await this.report('accepted', req);
      } catch (err) {
        await this.deps.store.releaseRequest(claimKey, req.requestId);
        await this.report('rejected', req, toFerryError(err));
      }
      return;
    }
    // A migration runs for seconds to minutes; its progress and result arrive as migration events.
    const body = { workload: req.workload, requestId: req.requestId, ...(req.to ? { to: req.to } : {}) };
    const job = requestCoordVerb(this.deps.nc, CoordVerb.MIGRATE, body, { timeoutMs: this.opts.migrateTimeoutMs }).then(
      () => undefined,
      // Failures before a migration record exists (unknown workload, lock held, no placement).
      (err) => this.report('rejected', req, toFerryError(err)),
    );
    this.running.add(job);
    void job.finally(() => this.running.delete(job));
  }

  private report(step: 'accepted' | 'rejected' | 'duplicate', req: Record<string, unknown>, error?: FerryError, migrationId?: string): Promise<void> {
    const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
    const workload = str(req.workload);
    const host = str(req.host);
    const ev: LifecycleEvent = {
      type: 'request',
      step,
      at: new Date().toISOString(),
      key: workload ?? host ?? str(req.requestId) ?? 'unknown',
      requestId: str(req.requestId) ?? null,
      figures: {},
    };
    if (workload) ev.workload = workload;
    if (host) ev.host = host;
    if (migrationId) ev.migrationId = migrationId;
    if (error) ev.error = error.toBody();
    if (error) this.log.warn({ code: error.code, requestId: ev.requestId }, `request rejected: ${error.message}`);
    return this.deps.journal.record(ev);
  }
}
