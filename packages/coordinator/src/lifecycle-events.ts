/**
 * Lifecycle events as JSON documents (LifecycleEvent), built from what the coordinator already
 * publishes on NATS (`events.migration`, `events.host`, `events.drain`) plus the migration's record
 * in Redis, so the state machine only keeps publishing what it did. Each document is republished
 * on `events.lifecycle`, kept in a capped Redis list (`ferry events` without --follow) and handed
 * to the sinks (metrics, Kafka).
 *
 * Runner step (about to start)  ->  event step (has happened)
 *   requested                    ->  requested
 *   preflight                    ->  (none: pre-flight has only begun)
 *   receiving                    ->  preflight-passed   (pre-flight passed; the target gets ready)
 *   checkpointing                ->  frozen             (the source freezes as the dump begins)
 *   restoring                    ->  transferred        (the image is on the target: bytes, dumpMs, transferMs)
 *   releasing                    ->  restored           (the target runs it: pid, restoreMs, downtimeMs)
 *   rolling-back                 ->  rolling-back
 *   done / final record          ->  succeeded | rolled-back | failed (by state, once the record is finished)
 * Host changes: joined, lost, restarted (registry), cordoned, uncordoned (setCordoned).
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  CoordVerb,
  DrainEvent,
  LifecycleEvent,
  MigrationEvent,
  PROTOCOL_VERSION,
  decode,
  hostOfAgentSubject,
  Id,
  encode,
  parseMessage,
  serveCoordVerb,
  subjects,
  silentLogger,
  type Logger,
  type MigrationStep,
} from '@ferry/protocol';
import type { HostRegistry } from './host-registry';
import type { MigrationStore } from './migration-store';

/** How many lifecycle events the Redis list keeps for `ferry events` (oldest dropped first). */
export const DEFAULT_RECENT_EVENTS_LIMIT = 1_000;
/**
 * Migrations whose emitted steps are remembered for de-duplication: recovery can repeat a step, and
 * a finished migration is published twice (its `done` step, then the final record).
 */
const SEEN_MIGRATIONS_LIMIT = 10_000;
/** Queue group for the `coord.events` verb: any coordinator may answer, exactly one does. */
const EVENTS_QUEUE = 'ferry-coordinator-events';

const STEP_NAMES: Partial<Record<MigrationStep, string>> = {
  requested: 'requested',
  receiving: 'preflight-passed',
  checkpointing: 'frozen',
  restoring: 'transferred',
  releasing: 'restored',
  'rolling-back': 'rolling-back',
};

const HostChange = z.object({ host: z.string(), change: z.string(), at: z.string().optional() });
const ProgressEvent = z.object({ migrationId: Id, bytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER), files: z.number().int().nonnegative().optional() });

/** Receives every lifecycle event (in order) while this coordinator leads. */
export type LifecycleSink = (ev: LifecycleEvent) => void;
/** Receives the target agent's cumulative transfer progress. */
export type ProgressSink = (migrationId: string, bytes: number) => void;

export interface EventJournalDeps {
  nc: NatsConnection;
  redis: Redis;
  store: MigrationStore;
  registry: HostRegistry;
  /** Only the leader records and forwards: standbys see the same NATS events. */
  isLeader: () => boolean;
  redisKeyPrefix: string;
  recentLimit: number;
  /** The target of a migration this coordinator runs (undefined: none): progress counts only from there. */
  migrationTarget?: (migrationId: string) => string | undefined;
  log?: Logger;
}

export class EventJournal {
  private readonly subs: Subscription[] = [];
  /** Progress events dropped (not from the migration's target); the first is logged. */
  private ignoredProgress = 0;
  private readonly sinks: LifecycleSink[] = [];
  private readonly progressSinks: ProgressSink[] = [];
  /** Per migration, the event steps already emitted. */
  private readonly seen = new Map<string, Set<string>>();
  /** Events are handled one at a time so each workload's events keep their order. */
  private chain: Promise<void> = Promise.resolve();
  private readonly log: Logger;
  private readonly onCordon = (host: string, cordoned: boolean) =>
    this.deps.nc.publish(subjects.event('host'), encode({ v: PROTOCOL_VERSION, host, change: cordoned ? 'cordoned' : 'uncordoned', at: new Date().toISOString() }));

  constructor(private readonly deps: EventJournalDeps) {
    this.log = deps.log ?? silentLogger;
  }

  private get listKey(): string {
    return `${this.deps.redisKeyPrefix}events`;
  }

  addSink(sink: LifecycleSink): void {
    this.sinks.push(sink);
  }

  addProgressSink(sink: ProgressSink): void {
    this.progressSinks.push(sink);
  }

  start(): void {
    const { nc } = this.deps;
    const on = (kind: string, fn: (value: unknown) => Promise<void> | void) =>
      this.subs.push(
        nc.subscribe(subjects.event(kind), {
          callback: (err, msg) => {
            if (err) return;
            let value: unknown;
            try {
              value = decode(msg.data);
            } catch (e) {
              this.log.warn({ err: (e as Error).message, kind }, 'undecodable event ignored');
              return;
            }
            this.enqueue(() => fn(value));
          },
        }),
      );
    on('migration', (v) => this.onMigration(parseMessage(MigrationEvent, v)));
    on('host', (v) => this.onHost(parseMessage(HostChange, v)));
    on('drain', (v) => this.onDrain(parseMessage(DrainEvent, v)));
    this.subs.push(
      nc.subscribe(subjects.allProgress(), {
        callback: (err, msg) => {
          if (err || !this.deps.isLeader()) return;
          try {
            const p = parseMessage(ProgressEvent, decode(msg.data));
            // Only the migration's own target speaks for its progress (the subject names the
            // publisher, and NATS lets an agent publish only its own): another agent cannot inflate
            // a transfer's figures or grow the per-migration counters with made-up ids.
            const from = hostOfAgentSubject(msg.subject);
            if (from === null || this.deps.migrationTarget?.(p.migrationId) !== from) {
              if (this.ignoredProgress++ === 0) this.log.warn({ subject: msg.subject, migrationId: p.migrationId }, 'progress for a migration not running into that host ignored');
              return;
            }
            for (const s of this.progressSinks) s(p.migrationId, p.bytes);
          } catch (e) {
            this.log.warn({ err: (e as Error).message }, 'malformed progress event ignored');
          }
        },
      }),
    );
    this.subs.push(serveCoordVerb(nc, CoordVerb.EVENTS, async (req) => ({ events: await this.recent(req.limit) }), { queue: EVENTS_QUEUE }));
    this.deps.registry.on('cordon', this.onCordon);
  }

  stop(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    this.deps.registry.off('cordon', this.onCordon);
  }

  /** Resolves once every event received so far has been handled (tests, shutdown). */
  idle(): Promise<void> {
    return this.chain;
  }

  /** The newest `limit` kept events, oldest first. */
  async recent(limit = 100): Promise<LifecycleEvent[]> {
    const raw = await this.deps.redis.lrange(this.listKey, -limit, -1);
    return raw.map((s) => JSON.parse(s) as LifecycleEvent);
  }

  /** Records an event that does not come from NATS (e.g. a rejected Kafka request). */
  record(ev: LifecycleEvent): Promise<void> {
    // Whoever consumed the request reports on it, leader or not: no one else saw it.
    return this.enqueue(() => this.emit(ev), false);
  }

  private enqueue(fn: () => Promise<void> | void, leaderOnly = true): Promise<void> {
    const next = this.chain.then(async () => {
      if (leaderOnly && !this.deps.isLeader()) return;
      await fn();
    });
    this.chain = next.catch((err) => this.log.warn({ err: (err as Error).message }, 'lifecycle event not recorded'));
    return this.chain;
  }

  private async emit(ev: LifecycleEvent): Promise<void> {
    const doc = JSON.stringify(ev);
    this.deps.nc.publish(subjects.event('lifecycle'), encode(ev));
    await this.deps.redis.multi().rpush(this.listKey, doc).ltrim(this.listKey, -this.deps.recentLimit, -1).exec();
    for (const sink of this.sinks) {
      try {
        sink(ev);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'lifecycle sink failed');
      }
    }
  }

  private async onMigration(ev: MigrationEvent): Promise<void> {
    const terminal = ev.state === 'succeeded' || ev.state === 'rolled-back' || ev.state === 'failed';
    const m = await this.deps.store.get(ev.migrationId);
    let step: string | undefined;
    if (terminal) {
      // The runner also publishes its `done` step before the final write; wait for the final record.
      if (!m || m.finishedAt === null) return;
      step = ev.state;
    } else {
      step = STEP_NAMES[ev.step];
    }
    if (!step || !this.firstTime(ev.migrationId, step)) return;
    const figures: Record<string, number> = {};
    if (ev.bytesTotal !== undefined) figures.bytesTotal = ev.bytesTotal;
    if (m) {
      figures.bytesTransferred = m.bytesTransferred;
      if (step === 'transferred' || terminal) {
        figures.dumpMs = m.phases.dumpMs;
        figures.transferMs = m.phases.transferMs;
        if (m.phases.localDirMs !== undefined) figures.localDirMs = m.phases.localDirMs;
        if (m.phases.precopyMs !== undefined) figures.precopyMs = m.phases.precopyMs;
      }
      if (step === 'restored' || terminal) {
        figures.restoreMs = m.phases.restoreMs;
        figures.downtimeMs = m.downtimeMs;
      }
      if (terminal) figures.totalMs = m.totalMs;
    } else if (ev.bytesTransferred !== undefined) {
      figures.bytesTransferred = ev.bytesTransferred;
    }
    const doc: LifecycleEvent = {
      type: 'migration',
      step,
      at: ev.at,
      key: ev.workload,
      migrationId: ev.migrationId,
      workload: ev.workload,
      from: ev.from,
      to: ev.to,
      state: ev.state,
      requestId: m?.requestId ?? null,
      figures,
    };
    if (m && (step === 'transferred' || terminal)) {
      doc.transport = m.transport;
      if (m.memory) doc.memory = m.memory;
    }
    if (m?.localDirs) doc.localDirs = m.localDirs;
    if (m && (step === 'restored' || terminal) && m.pid !== null) doc.pid = m.pid;
    if (terminal && m?.error) doc.error = m.error;
    await this.emit(doc);
  }

  private firstTime(migrationId: string, step: string): boolean {
    let steps = this.seen.get(migrationId);
    if (!steps) {
      if (this.seen.size >= SEEN_MIGRATIONS_LIMIT) this.seen.delete(this.seen.keys().next().value as string);
      steps = new Set();
      this.seen.set(migrationId, steps);
    }
    if (steps.has(step)) return false;
    steps.add(step);
    return true;
  }

  private async onHost(ev: z.infer<typeof HostChange>): Promise<void> {
    const info = this.deps.registry.has(ev.host) ? this.deps.registry.describe(ev.host) : null;
    await this.emit({
      type: 'host',
      step: ev.change,
      at: ev.at ?? new Date().toISOString(),
      key: ev.host,
      host: ev.host,
      figures: info ? { workloads: info.workloadCount, memoryAvailableBytes: info.memory.availableBytes } : {},
    });
  }

  private async onDrain(ev: DrainEvent): Promise<void> {
    if (ev.kind !== 'done') return; // each migration of the drain has its own events already
    const { host, ...summary } = ev.summary;
    await this.emit({ type: 'drain', step: 'drain-finished', at: new Date().toISOString(), key: host, host, drainId: ev.drainId, figures: summary });
  }
}
