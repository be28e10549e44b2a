/**
 * The coordinator: hosts and their workloads (from heartbeats), migrations (in Redis), and the
 * requests the CLI sends. It is the only component that decides a migration's fate.
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  AgentVerb,
  CoordRunRequest,
  CoordVerb,
  EmptyRequest,
  ErrorCode,
  FerryError,
  Heartbeat,
  MigrateRequest,
  NameRequest,
  RegisterRequest,
  StatusRequest,
  WorkloadInfo,
  decode,
  encode,
  parseMessage,
  request,
  serve,
  subjects,
  silentLogger,
  PROTOCOL_VERSION,
  type Logger,
} from '@ferry/protocol';
import { LIVENESS_SWEEP_INTERVAL_MS, type CoordinatorOptions } from './coordinator-options';
import { HostRegistry } from './host-registry';
import { MigrationRunner, strip } from './migration-runner';
import { MigrationStore } from './migration-store';

/** Heartbeats can list many workloads; a larger bound than control messages. */
const MAX_HEARTBEAT_BYTES = 64 * 1024 * 1024;

export class Coordinator {
  readonly registry: HostRegistry;
  readonly store: MigrationStore;
  private readonly runner: MigrationRunner;
  private readonly subs: Subscription[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly log: Logger;

  constructor(
    private readonly nc: NatsConnection,
    redis: Redis,
    private readonly opts: CoordinatorOptions,
    logger: Logger = silentLogger,
  ) {
    this.log = logger;
    this.registry = new HostRegistry(redis, opts.redisKeyPrefix, opts.hostLostAfterMs);
    this.store = new MigrationStore(redis, opts.redisKeyPrefix);
    this.runner = new MigrationRunner(nc, this.registry, this.store, opts, logger);
    this.registry.on('joined', (h) => this.hostEvent(h, 'joined'));
    this.registry.on('lost', (h) => this.hostEvent(h, 'lost'));
    this.registry.on('restarted', (h) => this.hostEvent(h, 'restarted'));
  }

  async start(): Promise<void> {
    await this.registry.load();
    const onError = (err: FerryError, subject: string) => this.log.warn({ code: err.code, subject }, err.message);
    const on = <S extends z.ZodType>(verb: CoordVerb, schema: S, fn: (req: z.infer<S>) => Promise<Record<string, unknown> | void>) =>
      this.subs.push(serve(this.nc, subjects.coord(verb), schema, fn, { onError }));

    on(CoordVerb.REGISTER, RegisterRequest, async (req) => {
      await this.registry.register(req);
      return { heartbeatIntervalMs: 1000 };
    });
    on(CoordVerb.HOSTS, EmptyRequest, async () => ({ hosts: this.registry.list() }));
    on(CoordVerb.PS, EmptyRequest, async () => ({ workloads: this.registry.workloads() }));
    on(CoordVerb.RUN, CoordRunRequest, async (req) => ({ workload: await this.run(req) }));
    on(CoordVerb.STOP, NameRequest, async (req) => this.stop(req.name));
    on(CoordVerb.MIGRATE, MigrateRequest, async (req) => ({ migration: await this.runner.migrate(req) }));
    on(CoordVerb.STATUS, StatusRequest, async (req) => {
      if (req.id) {
        const m = await this.store.get(req.id);
        if (!m) throw new FerryError(ErrorCode.NOT_FOUND, `no migration ${req.id}`);
        return { migrations: [strip(m)] };
      }
      return { migrations: (await this.store.list()).map(strip) };
    });
    this.subs.push(
      this.nc.subscribe(subjects.heartbeat(), {
        callback: (err, msg) => {
          if (err) return;
          try {
            const hb = parseMessage(Heartbeat, decode(msg.data, MAX_HEARTBEAT_BYTES));
            void this.registry.seen(hb).catch((e) => this.log.warn({ err: (e as Error).message }, 'heartbeat not applied'));
          } catch (e) {
            this.log.warn({ err: (e as Error).message }, 'malformed heartbeat ignored');
          }
        },
      }),
    );
    this.sweepTimer = setInterval(() => this.registry.sweep(), LIVENESS_SWEEP_INTERVAL_MS);
    await this.nc.flush();
  }

  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const s of this.subs) s.unsubscribe();
  }

  private async run(req: CoordRunRequest): Promise<WorkloadInfo> {
    this.registry.require(req.host);
    if (!this.registry.isAlive(req.host)) throw new FerryError(ErrorCode.UNAVAILABLE, `host ${req.host} is lost (no heartbeat)`);
    const existing = this.registry.findWorkload(req.name);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `a workload named ${req.name} already runs on ${existing.host}`);
    }
    const { host, v: _v, ...body } = req;
    const reply = await request(this.nc, subjects.agent(host, AgentVerb.RUN), body, z.object({ workload: WorkloadInfo }), { timeoutMs: 15_000 });
    this.registry.addWorkload(reply.workload);
    return reply.workload;
  }

  private async stop(name: string): Promise<void> {
    const w = this.registry.findWorkload(name);
    if (!w) throw new FerryError(ErrorCode.NOT_FOUND, `no workload named ${name}`);
    await request(this.nc, subjects.agent(w.host, AgentVerb.STOP), { name }, z.object({}).passthrough(), { timeoutMs: 10_000 });
    this.registry.removeWorkload(w.host, name);
  }

  private hostEvent(host: string, change: 'joined' | 'lost' | 'restarted'): void {
    this.log.info({ host }, `host ${change}`);
    this.nc.publish(subjects.event('host'), encode({ v: PROTOCOL_VERSION, host, change, at: new Date().toISOString() }));
  }
}
