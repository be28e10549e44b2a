/**
 * The coordinator: hosts and their workloads (from heartbeats), migrations (in Redis), and the
 * requests the CLI sends. It is the only component that decides a migration's fate.
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Redis } from 'ioredis';
import {
  AgentVerb,
  CoordVerb,
  type CoordRunRequest,
  type CoordVerbHandler,
  type DrainEvent,
  type DrainRequest,
  ErrorCode,
  FerryError,
  Heartbeat,
  type WorkloadInfo,
  workloadsDigest,
  decode,
  encode,
  parseMessage,
  requestAgentVerb,
  serveCoordVerb,
  serveRegistrations,
  subjects,
  hostOfAgentSubject,
  silentLogger,
  PROTOCOL_VERSION,
  type Logger,
} from '@ferry/protocol';
import { LIVENESS_SWEEP_INTERVAL_MS, type CoordinatorOptions } from './coordinator-options';
import { HostRegistry } from './host-registry';
import { resolveMounts } from './filesystems';
import { MigrationRunner, strip } from './migration-runner';
import { MigrationStore } from './migration-store';
import { assertDrainable, drainPlan, runDrain } from './drain';
import { LeaderLease } from './leader-lease';

/** Heartbeats can list many workloads; a larger bound than control messages. */
const MAX_HEARTBEAT_BYTES = 64 * 1024 * 1024;

export class Coordinator {
  readonly registry: HostRegistry;
  readonly store: MigrationStore;
  readonly runner: MigrationRunner;
  readonly lease: LeaderLease;
  private readonly subs: Subscription[] = [];
  /** Subscriptions only the leader holds (every command); a standby answers nothing. */
  private commandSubs: Subscription[] = [];
  /** Hosts being drained now (one drain per host at a time). */
  private readonly draining = new Set<string>();
  private recoveryTimer: NodeJS.Timeout | null = null;
  /** host/workload pairs whose frozen copy is being settled now. */
  private readonly reconciling = new Set<string>();
  /** Hosts whose workload list is being fetched now. */
  private readonly fetching = new Set<string>();
  private closed = false;
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
    this.lease = new LeaderLease(redis, `${opts.redisKeyPrefix}leader`, opts.coordinatorId, opts.leaseTtlMs, logger);
    this.registry.writable = false;
    this.lease.on('elected', () => void this.lead());
    this.lease.on('deposed', () => this.standBy());
    // A Redis that lost its data lost the hosts and their cordons too: write back what we know.
    this.lease.on('reacquired', () => void this.registry.reloadCordons().catch((err) => this.log.warn({ err: (err as Error).message }, 'hosts not re-persisted')));
    this.registry.on('joined', (h) => this.hostEvent(h, 'joined'));
    this.registry.on('lost', (h) => this.hostEvent(h, 'lost'));
    this.registry.on('restarted', (h) => this.hostEvent(h, 'restarted'));
  }

  /**
   * Follows heartbeats at once (a standby keeps a warm view of the hosts), and serves commands
   * only while it holds the leader lease. Resolves after the first lease attempt.
   */
  async start(): Promise<void> {
    await this.registry.load();
    this.subs.push(
      this.nc.subscribe(subjects.allHeartbeats(), {
        callback: (err, msg) => {
          if (err) return;
          try {
            const hb = parseMessage(Heartbeat, decode(msg.data, MAX_HEARTBEAT_BYTES));
            // NATS permissions hold an agent to its own subject; the body must agree with it, or
            // one agent's credentials could keep another host alive or rewrite its workloads.
            if (hb.host !== hostOfAgentSubject(msg.subject)) {
              this.log.warn({ subject: msg.subject, claimed: hb.host }, 'heartbeat for another host than its subject ignored');
              return;
            }
            void this.registry
              .seen(hb)
              .then((stale) => stale && this.fetchWorkloads(hb.host))
              .catch((e) => this.log.warn({ err: (e as Error).message }, 'heartbeat not applied'));
            for (const w of hb.workloads ?? []) if (w.state === 'frozen') this.reconcileFrozen(hb.host, w.name);
          } catch (e) {
            this.log.warn({ err: (e as Error).message }, 'malformed heartbeat ignored');
          }
        },
      }),
    );
    this.sweepTimer = setInterval(() => this.registry.sweep(), LIVENESS_SWEEP_INTERVAL_MS);
    await this.nc.flush();
    await this.lease.start();
  }

  get isLeader(): boolean {
    return this.lease.isLeader;
  }

  private async lead(): Promise<void> {
    if (this.closed) return;
    try {
      this.registry.writable = true;
      await this.registry.reloadCordons();
      this.serveCommands();
      await this.nc.flush();
      this.log.info({ coordinatorId: this.opts.coordinatorId }, 'serving commands as leader');
      await this.recoverInFlight();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'taking the lead failed; standing by');
      await this.lease.stop();
      this.standBy();
      if (!this.closed) await this.lease.start();
    }
  }

  private standBy(): void {
    this.registry.writable = false;
    for (const s of this.commandSubs) s.unsubscribe();
    this.commandSubs = [];
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
    this.recoveryTimer = null;
  }

  /**
   * Finishes or rolls back every migration a previous leader left in flight; those it cannot
   * decide yet (an agent does not answer) are retried while this coordinator leads.
   */
  private async recoverInFlight(): Promise<void> {
    if (!this.lease.isLeader || this.closed) return;
    // Migrations this process runs (or recovers) itself are not "left in flight".
    const orphans = (await this.store.inFlight()).filter((m) => !this.runner.isRunning(m.id));
    if (orphans.length > 0) this.log.warn({ count: orphans.length }, 'recovering in-flight migrations');
    const results = await Promise.all(
      orphans.map((m) =>
        this.runner.recover(m).catch((err) => {
          this.log.error({ migrationId: m.id, err: (err as Error).message }, 'recovery attempt failed');
          return false;
        }),
      ),
    );
    if (results.some((ok) => !ok) && this.lease.isLeader && !this.closed) {
      this.recoveryTimer = setTimeout(() => void this.recoverInFlight(), this.opts.recoveryRetryMs);
    }
  }

  /** Asks an agent for its workload list (its heartbeat's digest is not the one known here); one request per host at a time. */
  private fetchWorkloads(host: string): void {
    if (this.fetching.has(host)) return;
    this.fetching.add(host);
    void requestAgentVerb(this.nc, host, AgentVerb.PS, {}, { timeoutMs: this.opts.agentRequestTimeoutMs })
      .then(({ workloads }) => {
        this.registry.setWorkloads(host, workloads, workloadsDigest(workloads));
        for (const w of workloads) if (w.state === 'frozen') this.reconcileFrozen(host, w.name);
      })
      .catch((err) => this.log.warn({ host, err: (err as Error).message }, 'workload list not fetched'))
      .finally(() => this.fetching.delete(host));
  }

  /**
   * A frozen copy no running migration accounts for: its source agent was unreachable when the
   * migration ended (or restarted meanwhile; agents never thaw on their own). The migration's
   * final state decides: succeeded -> release (kill) it, rolled back -> resume it. A failed one
   * is resumed if no restore was ever asked for, released if the workload runs elsewhere, and
   * otherwise left for the operator.
   */
  private reconcileFrozen(host: string, workload: string): void {
    const key = `${host}/${workload}`;
    if (!this.lease.isLeader || this.reconciling.has(key)) return;
    this.reconciling.add(key);
    void (async () => {
      if (await this.store.lockHolder(workload)) return; // a migration in flight owns it
      // A heartbeat taken before a migration ended may still say "frozen": act only on what the
      // registry shows now (a recent move hides the source's copy; see HostRegistry.withRecentMoves).
      if (this.registry.stateOn(host, workload) !== 'frozen') return;
      const m = await this.store.latestFrom(workload, host);
      if (!m || m.state === 'pending' || m.state === 'running') return;
      const runningElsewhere = this.registry.workloads().some((w) => w.name === workload && w.host !== host && w.state === 'running');
      // A failed migration that never asked for a restore cannot have a copy anywhere else: thawing is safe.
      const neverRestored = !m.history.some((h) => h.step === 'restoring');
      const verb =
        m.state === 'succeeded' || runningElsewhere
          ? AgentVerb.RELEASE
          : m.state === 'rolled-back' || (m.state === 'failed' && neverRestored)
            ? AgentVerb.RESUME
            : null;
      if (!verb) return;
      this.log.warn({ host, workload, migrationId: m.id, verb }, 'settling a frozen copy left by an earlier migration');
      await requestAgentVerb(this.nc, host, verb, { migrationId: m.id, workload }, { timeoutMs: this.opts.agentRequestTimeoutMs });
      if (this.registry.stateOn(host, workload) !== 'frozen') return;
      if (verb === AgentVerb.RELEASE) this.registry.removeWorkload(host, workload);
      else this.registry.setWorkloadState(host, workload, 'running');
    })()
      .catch((err) => this.log.warn({ host, workload, err: (err as Error).message }, 'frozen copy not settled yet'))
      .finally(() => this.reconciling.delete(key));
  }

  private serveCommands(): void {
    if (this.commandSubs.length > 0) return;
    const onError = (err: FerryError, subject: string) => this.log.warn({ code: err.code, subject }, err.message);
    const on = <V extends CoordVerb>(verb: V, fn: CoordVerbHandler<V>) => this.commandSubs.push(serveCoordVerb(this.nc, verb, fn, { onError }));

    this.commandSubs.push(
      serveRegistrations(
        this.nc,
        async (req, msg) => {
          // Same rule as heartbeats: an agent registers only the host its subject (and its NATS permissions) name.
          if (req.host !== hostOfAgentSubject(msg.subject)) {
            throw new FerryError(ErrorCode.INVALID_ARGUMENT, `registration for host ${req.host} refused on ${msg.subject}`);
          }
          await this.registry.register(req);
          // Three beats within the time after which a silent host is lost: one lost beat never loses a host.
          return { heartbeatIntervalMs: Math.max(1, Math.floor(this.opts.hostLostAfterMs / 3)) };
        },
        { onError },
      ),
    );
    on(CoordVerb.HOSTS, async () => ({ hosts: this.registry.list() }));
    on(CoordVerb.PS, async () => ({ workloads: this.registry.workloads() }));
    on(CoordVerb.RUN, async (req) => ({ workload: await this.run(req) }));
    on(CoordVerb.STOP, async (req) => this.stop(req.name));
    on(CoordVerb.MIGRATE, async (req) => ({ migration: await this.runner.migrate(req) }));
    on(CoordVerb.STATUS, async (req) => {
      if (req.id) {
        const m = await this.store.get(req.id);
        if (!m) throw new FerryError(ErrorCode.NOT_FOUND, `no migration ${req.id}`);
        return { migrations: [strip(m)] };
      }
      return { migrations: (await this.store.list()).map(strip) };
    });
    on(CoordVerb.CORDON, async (req) => {
      await this.registry.setCordoned(req.host, true);
      return { host: this.registry.describe(req.host) };
    });
    on(CoordVerb.UNCORDON, async (req) => {
      await this.registry.setCordoned(req.host, false);
      return { host: this.registry.describe(req.host) };
    });
    on(CoordVerb.DRAIN, async (req) => ({ drainId: req.drainId, workloads: await this.drain(req) }));
  }

  /** Cordons the host, replies with the plan, and runs the drain in the background (results as events). */
  private async drain(req: DrainRequest): Promise<string[]> {
    assertDrainable(this.registry, req.host);
    if (this.draining.has(req.host)) throw new FerryError(ErrorCode.CONFLICT, `host ${req.host} is already being drained`);
    await this.registry.setCordoned(req.host, true);
    const plan = drainPlan(this.registry, req.host);
    this.draining.add(req.host);
    const publish = (ev: DrainEvent) => this.nc.publish(subjects.event('drain'), encode(ev));
    void runDrain(req.host, req.drainId, plan, {
      registry: this.registry,
      runner: this.runner,
      limits: { maxMigrationsPerSource: this.opts.maxMigrationsPerSource, maxMigrationsPerTarget: this.opts.maxMigrationsPerTarget },
      publish,
      log: this.log.child({ drainId: req.drainId }),
    }, {
      ...(req.transport ? { transport: req.transport } : {}),
      ...(req.restore ? { restore: req.restore } : {}),
    }).finally(() => this.draining.delete(req.host));
    return plan;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const s of this.subs) s.unsubscribe();
    this.standBy();
    await this.lease.stop();
  }

  private async run(req: CoordRunRequest): Promise<WorkloadInfo> {
    this.registry.require(req.host);
    if (!this.registry.isAlive(req.host)) throw new FerryError(ErrorCode.UNAVAILABLE, `host ${req.host} is lost (no heartbeat)`);
    const existing = this.registry.findWorkload(req.name);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `a workload named ${req.name} already runs on ${existing.host}`);
    }
    if (req.address !== undefined) {
      // A service address names one workload in the cluster: two hosts answering for it would split its traffic.
      const ip = req.address.split('/')[0];
      const holder = this.registry.workloads().find((w) => w.state !== 'exited' && w.address?.split('/')[0] === ip);
      if (holder) throw new FerryError(ErrorCode.CONFLICT, `address ${ip} belongs to workload ${holder.name} on ${holder.host}`);
      const host = this.registry.describe(req.host);
      if (host.address === ip) throw new FerryError(ErrorCode.CONFLICT, `address ${ip} is ${req.host}'s own address`);
    }
    const { host, v: _v, mounts, ...rest } = req;
    const body = { ...rest, mounts: resolveMounts(this.opts.filesystems, mounts) };
    const reply = await requestAgentVerb(this.nc, host, AgentVerb.RUN, body, { timeoutMs: 15_000 });
    this.registry.addWorkload(reply.workload);
    return reply.workload;
  }

  private async stop(name: string): Promise<void> {
    const w = this.registry.findWorkload(name);
    if (!w) throw new FerryError(ErrorCode.NOT_FOUND, `no workload named ${name}`);
    await requestAgentVerb(this.nc, w.host, AgentVerb.STOP, { name }, { timeoutMs: 10_000 });
    this.registry.removeWorkload(w.host, name);
  }

  private hostEvent(host: string, change: 'joined' | 'lost' | 'restarted'): void {
    this.log.info({ host }, `host ${change}`);
    this.nc.publish(subjects.event('host'), encode({ v: PROTOCOL_VERSION, host, change, at: new Date().toISOString() }));
  }
}
