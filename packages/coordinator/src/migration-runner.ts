/**
 * One migration, stop-and-copy (DESIGN.md "A migration"):
 *   preflight -> receiving (target ready) -> checkpointing (source dumps, streams) ->
 *   restoring (target) -> releasing (source kills its frozen copy) -> done.
 * Every step is persisted before it runs. Until the target has confirmed a restore, any failure
 * rolls back: the target discards, the source thaws. After the confirm the frozen source copy is
 * never thawed again, only killed. That is what makes the workload run exactly once.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { NatsConnection } from 'nats';
import {
  AgentVerb,
  ErrorCode,
  FerryError,
  IMAGE_KEY_BYTES,
  encode,
  sealToAgent,
  requestAgentVerb,
  workloadsDigest,
  subjects,
  toFerryError,
  silentLogger,
  PROTOCOL_VERSION,
  type AgentReply,
  type AgentRequestBody,
  type Logger,
  type MigrationEvent,
  type MigrationResult,
  type RestoreMode,
  type TransportPreference,
  type WorkloadInfo,
} from '@ferry/protocol';
import type { CoordinatorOptions } from './coordinator-options';
import type { HostRegistry } from './host-registry';
import type { MigrationRecord, MigrationStore } from './migration-store';
import { MigrationSlots } from './migration-slots';
import { memoryNeeded, placeWorkload, type Placement } from './placement';
import { recoverMigration } from './migration-recovery';
import { mountsForMigration } from './filesystems';
import { localFilesRefusal, rootDirsRefusal } from './local-file-check';
import { chooseRestoreMode, firstFrameTimeoutMs, planDataPath, plannedTransport } from './migration-plan';

export interface MigrateParams {
  workload: string;
  /** Without it the workload is placed (placeWorkload) and the result says why. */
  to?: string;
  requestId?: string;
  /** The image's data path; default auto. */
  transport?: TransportPreference;
  /** Default: lazy when the target's CRIU probe allows it. */
  restore?: RestoreMode;
  /** Memory pre-copy (MigrateRequest.precopy); default auto. */
  precopy?: 'auto' | 'off';
  /** Hosts placement must not pick (e.g. a drain retrying after a failed pre-flight). */
  exclude?: ReadonlySet<string>;
}

export function newId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export class MigrationRunner {
  private readonly log: Logger;
  /** Migrations running now, per source and target host (limits, placement). */
  readonly slots = new MigrationSlots();
  /** Emits 'disconnect' when the NATS connection drops: replies in flight may never arrive. */
  private readonly connection = new EventEmitter<{ disconnect: [] }>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly registry: HostRegistry,
    private readonly store: MigrationStore,
    private readonly opts: CoordinatorOptions,
    logger: Logger = silentLogger,
  ) {
    this.log = logger;
    this.connection.setMaxListeners(0);
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'disconnect') this.connection.emit('disconnect');
    })().catch(() => undefined);
  }

  /** Runs a migration to its end and returns the final record. */
  async migrate(params: MigrateParams): Promise<MigrationResult> {
    // No await on the usual path: a drain relies on placement and slot claims happening in the
    // same turn as its own check (see drain.ts).
    const cached = this.registry.findWorkload(params.workload);
    const workload = cached?.state === 'running' ? cached : await this.findRunningWorkload(params.workload);
    if (params.requestId) {
      // A retry: answer with the first migration, wherever the workload is now.
      const earlier = await this.store.requestHolder(params.requestId);
      if (earlier) return this.waitForEnd(earlier);
    }
    if (!workload || workload.state === 'exited') throw new FerryError(ErrorCode.NOT_FOUND, `no running workload named ${params.workload}`);
    // Two hosts claiming it running: whichever copy was picked could be the impostor's.
    const ambiguous = this.registry.ambiguousWorkload(params.workload);
    if (ambiguous) throw ambiguous;
    let placement: Placement | null = null;
    let to = params.to;
    if (to === undefined) {
      placement = this.place(params.workload, params.exclude);
      to = placement.host;
    }
    const id = newId('m');
    if (params.requestId) {
      const earlier = await this.store.claimRequest(params.requestId, id);
      if (earlier) return this.waitForEnd(earlier);
    }
    const now = new Date().toISOString();
    const m: MigrationRecord = {
      id,
      workload: params.workload,
      from: workload.host,
      to,
      state: 'pending',
      step: 'requested',
      requestedAt: now,
      finishedAt: null,
      downtimeMs: 0,
      totalMs: 0,
      bytesTransferred: 0,
      transport: 'nats',
      phases: { dumpMs: 0, transferMs: 0, restoreMs: 0 },
      pid: null,
      error: null,
      history: [{ step: 'requested', at: now }],
      transferId: newId('x'),
      requestId: params.requestId ?? null,
      frozenAt: null,
      placement,
      transportPreference: params.transport ?? 'auto',
      ...(params.restore ? { restore: params.restore } : {}),
      ...(params.precopy ? { precopyPreference: params.precopy } : {}),
    };
    this.slots.add(id, { from: m.from, to: m.to, rssBytes: workload.rssBytes });
    try {
      await this.store.create(m);
    } catch (err) {
      this.slots.remove(id);
      // The request id must not point at a migration that never existed.
      if (params.requestId) await this.store.releaseRequest(params.requestId, id).catch(() => undefined);
      throw err;
    }
    this.emit(m);
    try {
      return await this.run(m);
    } finally {
      this.slots.remove(id);
    }
  }

  /** True while this runner runs (or recovers) migration `id`. */
  isRunning(id: string): boolean {
    return this.slots.has(id);
  }

  /**
   * The registry is a cache of heartbeats; one taken just before a migration ended can briefly hide
   * a workload that runs. Before answering NOT_FOUND, the agents themselves are asked.
   */
  private async findRunningWorkload(name: string): Promise<WorkloadInfo | undefined> {
    const alive = this.registry.list().filter((h) => h.state === 'alive');
    await Promise.all(
      alive.map(async (h) => {
        try {
          const { workloads } = await requestAgentVerb(this.nc, h.name, AgentVerb.PS, {}, { timeoutMs: 2_000 });
          this.registry.setWorkloads(h.name, workloads, workloadsDigest(workloads));
        } catch {
          // An agent that does not answer keeps its cached list.
        }
      }),
    );
    return this.registry.findWorkload(name);
  }

  /** Chooses a target for a running workload now; FAILED_PRECONDITION when no host fits. */
  place(workload: string, exclude?: ReadonlySet<string>): Placement {
    const w = this.registry.findWorkload(workload);
    if (!w || w.state === 'exited') throw new FerryError(ErrorCode.NOT_FOUND, `no running workload named ${workload}`);
    return placeWorkload(
      { name: w.name, host: w.host, rssBytes: w.rssBytes },
      this.registry.placementView(this.slots),
      { maxIncomingPerHost: this.opts.maxMigrationsPerTarget, exclude },
    );
  }

  /**
   * Finishes or rolls back a migration a previous coordinator left in flight (see
   * migration-recovery.ts). Returns false when it cannot decide yet (an agent does not answer);
   * the caller retries later and the workload's lock stays held meanwhile.
   */
  async recover(m: MigrationRecord): Promise<boolean> {
    this.slots.add(m.id, { from: m.from, to: m.to, rssBytes: 0 });
    const log = this.log.child({ migrationId: m.id, workload: m.workload });
    try {
      const settled = await recoverMigration(m, {
        ask: (host, verb, body, timeoutMs) => this.callAgent(host, verb, body, timeoutMs),
        step: (step, state) => this.step(m, step, state),
        timeoutMs: this.opts.agentRequestTimeoutMs,
        log,
      });
      if (!settled) return false;
      if (m.state === 'succeeded' && m.pid !== null) this.registry.moveWorkload(m.workload, m.from, m.to, m.pid);
      m.finishedAt = new Date().toISOString();
      m.totalMs = Date.now() - Date.parse(m.requestedAt);
      await this.store.finish(m);
      this.emit(m);
      return true;
    } finally {
      this.slots.remove(m.id);
    }
  }

  private async waitForEnd(id: string): Promise<MigrationResult> {
    for (;;) {
      const m = await this.store.get(id);
      if (!m) throw new FerryError(ErrorCode.NOT_FOUND, `no migration ${id}`);
      if (m.state !== 'pending' && m.state !== 'running') return strip(m);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private async run(m: MigrationRecord): Promise<MigrationResult> {
    const log = this.log.child({ migrationId: m.id, workload: m.workload });
    const started = Date.now();
    // Set once the target has restored: from then on the frozen source copy must never run again.
    let restoredOnTarget = false;
    let frozen = false;
    // Set once a restore was asked for: the target may have a running copy even if no reply came.
    let restoreRequested = false;
    let imageKey: Buffer | undefined;
    try {
      await this.step(m, 'preflight', 'running');
      const before = this.registry.findWorkload(m.workload);
      await this.preflight(m);
      // Decided before anything is frozen, from the target's probe.
      m.restore = chooseRestoreMode(m.restore, this.opts.defaultRestore, this.registry.describe(m.to).criu, m.to, m.transportPreference ?? 'auto', before ?? {});

      await this.step(m, 'receiving');
      const workload = this.registry.findWorkload(m.workload);
      // The one decision of how the memory moves; the agents carry it out.
      const plan = planDataPath(m.transportPreference ?? 'auto', m.restore, this.registry.describe(m.from).criu, this.registry.describe(m.to).criu, {
        address: workload?.address,
      });
      const postCopy = m.restore === 'post-copy';
      // The image key lives only here, for the two requests that need it: never in `m` (Redis),
      // events or logs, and on the bus only sealed to each agent's registered key (sealed-key.ts).
      // A coordinator that restarts mid-transfer rolls the migration back anyway.
      imageKey = randomBytes(IMAGE_KEY_BYTES);
      const received = await this.callAgent(m.to, AgentVerb.RECEIVE, {
        migrationId: m.id,
        transferId: m.transferId,
        workload: m.workload,
        source: m.from,
        idleTimeoutMs: this.opts.transferIdleTimeoutMs,
        firstFrameTimeoutMs: firstFrameTimeoutMs(this.opts.transferIdleTimeoutMs, workload?.rssBytes ?? 0, this.opts.checkpointTimeoutMs),
        // From this coordinator's configuration by name, never as the source's heartbeat described them.
        mounts: mountsForMigration(this.opts.filesystems, workload?.mounts ?? []),
        ...(workload?.address ? { address: workload.address } : {}),
        localDirs: workload?.localDirs ?? [],
        pageServer: plan.pageServer,
        pageServerTls: plan.pageServerTls,
        pageTunnel: plan.pageTunnel,
        lazyPageTunnel: plan.lazyPageTunnel,
        sealedImageKey: sealToAgent(imageKey, this.registry.sealKeyOf(m.to), m.id),
      }, this.opts.agentRequestTimeoutMs);

      // What the memory takes, as far as the plan knows it (the checkpoint's reply says what the stream took):
      // a migration that fails inside a page path says so.
      m.transport = plannedTransport(plan, m.transport);
      m.memory = plan.memory;
      if (workload?.localDirs?.length) m.localDirs = workload.localDirs;
      await this.step(m, 'checkpointing');
      frozen = true;
      this.registry.setWorkloadState(m.from, m.workload, 'frozen');
      const cp = await this.callAgent(m.from, AgentVerb.CHECKPOINT, {
        migrationId: m.id,
        transferId: m.transferId,
        workload: m.workload,
        target: m.to,
        idleTimeoutMs: this.opts.transferIdleTimeoutMs,
        memory: plan.memory,
        transport: plan.stream,
        ...(received.pageServer ? { pageServer: received.pageServer } : {}),
        ...(received.pageTunnel ? { pageTunnel: received.pageTunnel } : {}),
        sealedImageKey: sealToAgent(imageKey, this.registry.sealKeyOf(m.from), m.id),
        targetPipeData: this.registry.describe(m.to).criu.pipeData,
        precopyMemory: plan.precopyMemory && m.precopyPreference !== 'off',
      }, this.opts.checkpointTimeoutMs, [m.to]);
      imageKey.fill(0);
      m.frozenAt = cp.frozenAt;
      m.transport = cp.transport;
      m.phases.dumpMs = cp.dumpMs;
      m.phases.transferMs = cp.transferMs;
      if (cp.localDirMs > 0) m.phases.localDirMs = cp.localDirMs;
      if (cp.precopyMs > 0) {
        m.phases.precopyMs = cp.precopyMs;
        m.precopyBytes = cp.precopyBytes;
      }
      m.bytesTransferred = cp.bytes;

      await this.step(m, 'restoring');
      restoreRequested = true;
      const rs = await this.callAgent(
        m.to,
        AgentVerb.RESTORE,
        {
          migrationId: m.id,
          workload: m.workload,
          mode: m.restore,
          // Its TLS credentials pass through here in memory only, like the page server's.
          ...(cp.lazyPageServer ? { lazyPageServer: cp.lazyPageServer } : {}),
        },
        this.opts.restoreTimeoutMs,
      );
      restoredOnTarget = true;
      m.pid = rs.pid;
      m.phases.restoreMs = rs.restoreMs;
      if (rs.pullMs > 0) m.phases.pullMs = rs.pullMs;
      m.downtimeMs = Math.max(0, rs.resumedAt - cp.frozenAt);
      // Post-copy: the pages fetched after the resume crossed too (with the page server they are in cp.bytes already).
      if (postCopy) m.bytesTransferred += rs.pageBytes;

      await this.step(m, 'releasing');
      try {
        await this.callAgent(m.from, AgentVerb.RELEASE, { migrationId: m.id, workload: m.workload }, this.opts.agentRequestTimeoutMs);
      } catch (err) {
        // The workload runs on the target; the source's frozen copy stays frozen (never thawed)
        // and is killed when that agent is reachable again.
        log.error({ err: toFerryError(err).message }, 'source did not release its frozen copy');
      }
      await this.callAgent(m.to, AgentVerb.SETTLE, { migrationId: m.id, workload: m.workload }, this.opts.agentRequestTimeoutMs).catch(
        (err) => log.warn({ err: toFerryError(err).message }, 'target did not settle'),
      );
      this.registry.moveWorkload(m.workload, m.from, m.to, rs.pid, before);
      m.state = 'succeeded';
      await this.step(m, 'done');
    } catch (err) {
      imageKey?.fill(0);
      const fe = toFerryError(err);
      m.error = fe.toBody();
      log.warn({ code: fe.code, details: fe.details }, `migration failed: ${fe.message}`);
      if (restoredOnTarget) {
        // Cannot happen today (only release may fail after the restore, and it is caught), but if
        // it ever does, the target copy is the one that lives.
        m.state = 'failed';
      } else {
        await this.step(m, 'rolling-back');
        m.state = (await this.rollBack(m, frozen, restoreRequested, log)) ? 'rolled-back' : 'failed';
      }
      if (m.frozenAt) m.downtimeMs = Date.now() - m.frozenAt;
    }
    m.finishedAt = new Date().toISOString();
    m.totalMs = Date.now() - started;
    await this.store.finish(m);
    this.emit(m);
    return strip(m);
  }

  /** Returns true when the workload is known to run on the source again. */
  private async rollBack(m: MigrationRecord, frozen: boolean, restoreRequested: boolean, log: Logger): Promise<boolean> {
    const ref = { migrationId: m.id, workload: m.workload };
    if (this.registry.has(m.to)) {
      try {
        await this.callAgent(m.to, AgentVerb.DISCARD, ref, this.opts.agentRequestTimeoutMs);
      } catch (err) {
        if (restoreRequested) {
          // The target may run a restored copy we cannot see: thawing the source now could make
          // two. The source stays frozen until the target is reachable and has discarded.
          log.error({ err: toFerryError(err).message }, 'target unreachable after a restore request; source left frozen');
          m.error = {
            code: ErrorCode.UNAVAILABLE,
            message: `${m.error?.message ?? ''}; the target could not confirm it discarded its copy, so the source was left frozen`,
          };
          return false;
        }
        log.warn({ err: toFerryError(err).message }, 'target did not discard (it holds no restored copy)');
      }
    }
    if (!frozen) return true;
    try {
      await this.callAgent(m.from, AgentVerb.RESUME, ref, this.opts.agentRequestTimeoutMs);
      this.registry.setWorkloadState(m.from, m.workload, 'running');
      return true;
    } catch (err) {
      log.error({ err: toFerryError(err).message }, 'could not thaw the source copy');
      m.error = { code: ErrorCode.UNAVAILABLE, message: `${m.error?.message ?? ''}; thawing the source failed: ${toFerryError(err).message}` };
      return false;
    }
  }

  private async preflight(m: MigrationRecord): Promise<void> {
    if (!this.registry.has(m.to)) throw new FerryError(ErrorCode.NOT_FOUND, `no host named ${m.to}`);
    if (m.to === m.from) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${m.workload} already runs on ${m.to}`);
    for (const host of [m.from, m.to]) {
      if (!this.registry.isAlive(host)) throw new FerryError(ErrorCode.UNAVAILABLE, `host ${host} is lost (no heartbeat)`);
      const info = this.registry.describe(host);
      if (!info.criu.usable) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `CRIU is not usable on ${host}: ${info.criu.problem ?? 'probe failed'}`);
    }
    const target = this.registry.describe(m.to);
    if (target.cordoned) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `host ${m.to} is cordoned`);
    const workload = this.registry.findWorkload(m.workload);
    const need = memoryNeeded(workload?.rssBytes ?? 0);
    if (target.memory.availableBytes < need) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `host ${m.to} has ${target.memory.availableBytes} bytes available, ${m.workload} needs ${need}`);
    }
    // A live answer from both agents now, rather than a dead one discovered after the freeze.
    await Promise.all([m.from, m.to].map((h) => this.callAgent(h, AgentVerb.PROBE, {}, 2_000)));
    // CRIU restores only onto a CPU with the features the dumped tasks may use (criu cpuinfo check).
    const cpu = await this.callAgent(m.from, AgentVerb.CPUINFO, {}, this.opts.agentRequestTimeoutMs);
    const check = await this.callAgent(m.to, AgentVerb.CPUINFO_CHECK, { source: m.from, image: cpu.image }, this.opts.agentRequestTimeoutMs);
    if (!check.compatible) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the CPU of ${m.to} is not compatible with ${m.from}'s: ${check.problem ?? 'criu cpuinfo check failed'}`);
    }
    // Its sockets and unlinked files can move (a connection to a peer on the same host cannot).
    const { localFiles, rootDirs } = await this.callAgent(m.from, AgentVerb.MIGRATABLE, { name: m.workload, targetPipeData: target.criu.pipeData }, this.opts.agentRequestTimeoutMs);
    // Files it holds open on the source's own disks: CRIU reopens them by path, so the target must
    // have the same ones; and the directories its own root binds, which the target binds from its own.
    if (localFiles.length > 0 || rootDirs.length > 0) {
      const check = await this.callAgent(m.to, AgentVerb.CHECK_FILES, { files: localFiles, dirs: rootDirs }, this.opts.agentRequestTimeoutMs);
      const refusal = rootDirsRefusal(m.workload, m.from, m.to, check) ?? localFilesRefusal(m.workload, m.from, m.to, check);
      if (refusal) throw refusal;
    }
  }

  /**
   * A request to an agent that fails fast when that host (or any of `alsoWatch`) is declared lost,
   * instead of waiting out a long timeout.
   */
  private callAgent<V extends AgentVerb>(
    host: string,
    verb: V,
    body: AgentRequestBody<V>,
    timeoutMs: number,
    alsoWatch: string[] = [],
  ): Promise<AgentReply<V>> {
    const watched = new Set([host, ...alsoWatch]);
    return new Promise((resolve, reject) => {
      const onLost = (lost: string) => {
        if (!watched.has(lost)) return;
        cleanup();
        reject(new FerryError(ErrorCode.UNAVAILABLE, `host ${lost} was lost (no heartbeat) during ${verb}`));
      };
      // A reply published while the connection was down is lost for good; a long request (a
      // checkpoint may take half an hour) must not wait its whole timeout for it.
      const onDisconnect = () => {
        cleanup();
        reject(new FerryError(ErrorCode.UNAVAILABLE, `connection to NATS lost during ${verb} on ${host}`));
      };
      const cleanup = () => {
        this.registry.off('lost', onLost);
        this.connection.off('disconnect', onDisconnect);
      };
      this.registry.on('lost', onLost);
      this.connection.on('disconnect', onDisconnect);
      requestAgentVerb(this.nc, host, verb, body, { timeoutMs }).then(
        (v) => {
          cleanup();
          resolve(v);
        },
        (err) => {
          cleanup();
          reject(err);
        },
      );
    });
  }

  private async step(m: MigrationRecord, step: MigrationRecord['step'], state?: MigrationRecord['state']): Promise<void> {
    if (state) m.state = state;
    await this.store.step(m, step);
    this.emit(m);
  }

  private emit(m: MigrationRecord): void {
    const ev: MigrationEvent = {
      v: PROTOCOL_VERSION,
      migrationId: m.id,
      workload: m.workload,
      from: m.from,
      to: m.to,
      step: m.step,
      state: m.state,
      at: new Date().toISOString(),
      bytesTransferred: m.bytesTransferred,
      bytesTotal: this.registry.findWorkload(m.workload)?.rssBytes ?? 0,
    };
    this.nc.publish(subjects.event('migration'), encode(ev));
  }
}

/** The public shape, without coordinator-internal fields. */
export function strip(m: MigrationRecord): MigrationResult {
  const { transferId: _t, requestId: _r, frozenAt: _f, placement, ...pub } = m;
  if (placement) return { ...pub, placement };
  return pub;
}
