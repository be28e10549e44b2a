/**
 * Everything around the state machine that reports on it or feeds it from outside: lifecycle
 * events (NATS + Redis), Prometheus metrics and the HTTP API on one server, and the Kafka bridge.
 * None of it is needed for a migration to run: a port that is taken or a Kafka broker that does
 * not answer is logged as an error and the coordinator carries on without that part.
 */
import type { Server } from 'node:http';
import type { NatsConnection } from 'nats';
import type { Redis } from 'ioredis';
import { ErrorCode, FerryError, silentLogger, type KafkaCredentials, type Logger } from '@ferry/protocol';
import type { Coordinator } from './coordinator';
import { CoordinatorMetrics } from './coordinator-metrics';
import { createHttpServer, listenHttpServer } from './http-api';
import { HttpAuthenticator } from './http-auth';
import { KafkaBridge, defaultKafkaBridgeOptions } from './kafka-bridge';
import { DEFAULT_RECENT_EVENTS_LIMIT, EventJournal } from './lifecycle-events';

/** The Prometheus port registered for ferry's coordinator exporter. */
export const DEFAULT_HTTP_PORT = 9464;

export interface ObservabilityOptions {
  /** Address of the metrics + API server; loopback by default (the API can migrate workloads). */
  httpAddress: string;
  /** Its port; 0 picks a free one; null serves no HTTP at all. */
  httpPort: number | null;
  /**
   * The HTTP API's tokens file (FERRY_HTTP_TOKENS; http-tokens.ts), re-read when it changes; null:
   * none, so every /v1 call and the event stream are refused (401) and /metrics is open.
   */
  httpTokensFile: string | null;
  /** Kafka bootstrap brokers (host:port); empty: no Kafka. */
  kafkaBrokers: string[];
  kafkaEventsTopic: string;
  kafkaRequestsTopic: string;
  /** TLS to the brokers (null: plain TCP; caFile null: the system's CAs). */
  kafkaTls: { caFile: string | null } | null;
  /** SASL credentials for the brokers; null: none. */
  kafkaSasl: KafkaCredentials | null;
  /** Who may sign Kafka requests, with their keys; empty: every request is rejected. */
  kafkaRequestKeys: ReadonlyMap<string, readonly Buffer[]>;
  /** Lifecycle events kept in Redis for `ferry events`. */
  recentEventsLimit: number;
}

export function defaultObservabilityOptions(): ObservabilityOptions {
  const k = defaultKafkaBridgeOptions();
  return {
    httpAddress: '127.0.0.1',
    httpPort: DEFAULT_HTTP_PORT,
    httpTokensFile: null,
    kafkaBrokers: [],
    kafkaEventsTopic: k.eventsTopic,
    kafkaRequestsTopic: k.requestsTopic,
    kafkaTls: k.tls,
    kafkaSasl: k.sasl,
    kafkaRequestKeys: k.requestKeys,
    recentEventsLimit: DEFAULT_RECENT_EVENTS_LIMIT,
  };
}

export function compileObservabilityOptions(partial: Partial<ObservabilityOptions> = {}): ObservabilityOptions {
  const o = defaultObservabilityOptions();
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (o as unknown as Record<string, unknown>)[k] = v;
  if (o.httpPort !== null && (!Number.isInteger(o.httpPort) || o.httpPort < 0 || o.httpPort > 65_535)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `httpPort must be a port number, got ${o.httpPort}`);
  }
  if (!Number.isInteger(o.recentEventsLimit) || o.recentEventsLimit <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'recentEventsLimit must be a positive whole number');
  for (const b of o.kafkaBrokers) {
    if (!/^[^\s:]+:\d{1,5}$/.test(b)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `Kafka broker ${JSON.stringify(b)} is not host:port`);
  }
  return o;
}

export interface RunningObservability {
  journal: EventJournal;
  metrics: CoordinatorMetrics;
  /** The port the HTTP server listens on, null when it does not. */
  httpPort: number | null;
  kafka: KafkaBridge | null;
  /** Reads the HTTP tokens file again now (SIGHUP); it is also re-read whenever it changes. */
  reloadHttpTokens(): void;
  stop(): Promise<void>;
}

export async function startObservability(
  coordinator: Coordinator,
  nc: NatsConnection,
  redis: Redis,
  opts: ObservabilityOptions & { redisKeyPrefix: string; coordinatorId: string },
  logger: Logger = silentLogger,
): Promise<RunningObservability> {
  const journal = new EventJournal({
    nc,
    redis,
    store: coordinator.store,
    registry: coordinator.registry,
    isLeader: () => coordinator.isLeader,
    migrationTarget: (id) => coordinator.runner.slots.target(id),
    redisKeyPrefix: opts.redisKeyPrefix,
    recentLimit: opts.recentEventsLimit,
    log: logger.child({ part: 'events' }),
  });
  const metrics = new CoordinatorMetrics({
    hosts: () => coordinator.registry.list(),
    workloads: () => coordinator.registry.workloads(),
    inFlight: () => coordinator.runner.slots.size,
  });
  journal.addSink((ev) => metrics.observe(ev));
  journal.addProgressSink((id, bytes) => metrics.progress(id, bytes));
  journal.start();
  await nc.flush();

  let server: Server | null = null;
  let httpPort: number | null = null;
  const auth = new HttpAuthenticator(opts.httpTokensFile, logger.child({ part: 'http-auth' }));
  if (opts.httpPort !== null) {
    if (!auth.configured) logger.warn('no HTTP tokens file (FERRY_HTTP_TOKENS): the HTTP API and dashboard refuse every request; /metrics is open');
    auth.watch();
    const s = createHttpServer({ nc, metrics: metrics.registry, auth, log: logger.child({ part: 'http' }) });
    try {
      httpPort = await listenHttpServer(s, opts.httpAddress, opts.httpPort);
      server = s;
      logger.info({ address: opts.httpAddress, port: httpPort }, 'serving metrics and the HTTP API');
    } catch (err) {
      logger.error({ err: (err as Error).message, address: opts.httpAddress, port: opts.httpPort }, 'HTTP server not started; metrics and the HTTP API are off');
    }
  }

  let kafka: KafkaBridge | null = null;
  if (opts.kafkaBrokers.length > 0) {
    const bridge = new KafkaBridge(
      {
        ...defaultKafkaBridgeOptions(),
        brokers: opts.kafkaBrokers,
        eventsTopic: opts.kafkaEventsTopic,
        requestsTopic: opts.kafkaRequestsTopic,
        clientId: opts.coordinatorId,
        tls: opts.kafkaTls,
        sasl: opts.kafkaSasl,
        requestKeys: opts.kafkaRequestKeys,
      },
      { nc, journal, store: coordinator.store, log: logger.child({ part: 'kafka' }) },
    );
    try {
      await bridge.start();
      kafka = bridge;
      logger.info({ brokers: opts.kafkaBrokers }, 'Kafka bridge started');
    } catch (err) {
      logger.error({ err: (err as Error).message, brokers: opts.kafkaBrokers }, 'Kafka bridge not started; events are not produced and requests not consumed');
      await bridge.stop();
    }
  }

  return {
    journal,
    metrics,
    httpPort,
    kafka,
    reloadHttpTokens: () => auth.reload(),
    async stop() {
      auth.close();
      journal.stop();
      await kafka?.stop();
      await journal.idle();
      if (server) {
        const closed = new Promise<void>((r) => server!.close(() => r()));
        server.closeAllConnections();
        await closed;
      }
    },
  };
}
