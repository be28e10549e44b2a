/**
 * The agent: one per host, root. It launches workloads, keeps their inventory, and carries out its
 * half of each migration step on the coordinator's request. It never decides a migration's fate:
 * freezing, thawing, killing and discarding happen only when the coordinator says so, which keeps
 * "the workload runs exactly once" a property of one state machine.
 *
 * This file only wires the parts together and answers the agent verbs of @ferry/protocol:
 * workloads/ (run, stop, list), migration/ (the source and target halves), heartbeat.ts.
 */
import type { NatsConnection, Subscription } from 'nats';
import { AgentVerb, SealKeyPair, serveAgentVerb, silentLogger, type AgentVerbHandler, type CriuInfo, type Logger, type MigrationRecordReply, type MigrationRef, type WorkloadInfo } from '@ferry/protocol';
import type { LinuxSyscalls } from '@ferry/native';
import type { AgentMetrics } from './agent-metrics';
import type { AgentOptions } from './agent-options';
import { checkCpuinfo, dumpCpuinfo } from './criu/cpu-compat';
import type { CriuDriver } from './criu/criu-driver';
import { withShadowWorkload } from './fault-injection';
import { HeartbeatLoop } from './heartbeat';
import { readHostMemory } from './host/host-memory';
import { checkFiles, FileDigests } from './host/local-files';
import { isAlive } from './host/process-tree';
import type { RepairSyscalls } from './host/tcp-sockets';
import type { WorkDirs } from './host/work-dir';
import type { FilePumpSyscalls } from './migration/native-file-pump';
import type { StreamerSyscalls } from './criu/image-streamer';
import type { PrecopySyscalls } from './migration/memory-precopy';
import type { TunnelSyscalls } from './migration/page-tunnel';
import { MigrationSource } from './migration/migration-source';
import { MigrationTarget } from './migration/migration-target';
import type { Inventory } from './workloads/inventory';
import { Workloads } from './workloads/workloads';
import { rootsDirOf } from './host/work-dir';

export interface AgentDeps {
  nc: NatsConnection;
  /** Syscalls Node lacks (lseek of reopened pinned files, TCP repair, unmounting shared filesystems). */
  syscalls: Pick<LinuxSyscalls, 'lseek' | 'umount2' | 'unreadBytes'> & RepairSyscalls & TunnelSyscalls & FilePumpSyscalls & StreamerSyscalls & PrecopySyscalls;
  criu: CriuDriver;
  criuInfo: CriuInfo;
  workDirs: WorkDirs;
  inventory: Inventory;
  logger?: Logger;
  /** Prometheus metrics of this agent, when it serves them. */
  metrics?: AgentMetrics;
}

export class Agent {
  private readonly log: Logger;
  private readonly subs: Subscription[] = [];
  readonly workloads: Workloads;
  private readonly source: MigrationSource;
  private readonly target: MigrationTarget;
  private readonly heartbeat: HeartbeatLoop;
  /** What heartbeats and PS report (an impostor entry added only under fault injection). */
  private readonly listWorkloads: () => Promise<WorkloadInfo[]>;
  /** Migration secrets are sealed to this key pair; its private half never leaves this process. */
  private readonly sealKeys = SealKeyPair.generate();
  /** Digests of local files, shared by both pre-flight halves (migratable here as a source, check-files as a target). */
  private readonly fileDigests = new FileDigests();

  constructor(
    private readonly opts: AgentOptions,
    private readonly deps: AgentDeps,
  ) {
    this.log = (deps.logger ?? silentLogger).child({ host: opts.host });
    const { nc, metrics, criu } = deps;
    this.workloads = new Workloads({ host: opts.host, address: opts.address, dataDir: opts.dataDir, localDirRoots: opts.localDirRoots, rootsDir: rootsDirOf(deps.workDirs) }, deps.inventory, criu, deps.syscalls, this.log, metrics);
    const shared = { ...deps, workloads: this.workloads, log: this.log };
    this.source = new MigrationSource({ address: opts.address, ghostLimitBytes: opts.ghostLimitBytes, precopyMinBytes: opts.precopyMinBytes, maxImageBytes: opts.maxImageBytes, rootsDir: rootsDirOf(deps.workDirs), faults: opts.faults }, shared);
    this.target = new MigrationTarget({ host: opts.host, address: opts.address, maxImageBytes: opts.maxImageBytes, dataDir: opts.dataDir, localDirRoots: opts.localDirRoots, rootsDir: rootsDirOf(deps.workDirs) }, shared);
    this.listWorkloads = withShadowWorkload(() => this.workloads.list(), opts.host, opts.faults);
    this.heartbeat = new HeartbeatLoop(nc, { host: opts.host, address: opts.address, intervalMs: opts.heartbeatIntervalMs, sealKey: this.sealKeys.publicKey }, deps.criuInfo, this.listWorkloads, this.log);
  }

  get host(): string {
    return this.opts.host;
  }

  /** Answers requests, then registers and heartbeats until closed. */
  async start(): Promise<void> {
    await this.workloads.refresh();
    const { nc, criu, workDirs } = this.deps;
    this.on(AgentVerb.PROBE, async () => ({ criu: this.deps.criuInfo, memory: await readHostMemory() }));
    this.on(AgentVerb.PS, async () => ({ workloads: await this.listWorkloads() }));
    this.on(AgentVerb.RUN, async (req) => ({ workload: await this.workloads.run(req) }));
    this.on(AgentVerb.STOP, async (req) => this.workloads.stop(req.name));
    this.on(AgentVerb.RECEIVE, async (req) => this.target.receive(req, this.openImageKey(req)));
    this.on(AgentVerb.CHECKPOINT, async (req) => this.source.checkpoint(req, this.openImageKey(req)));
    this.on(AgentVerb.RESTORE, async (req) => this.target.restore(req));
    this.on(AgentVerb.RELEASE, async (req) => this.source.release(req));
    this.on(AgentVerb.RESUME, async (req) => this.source.resume(req));
    this.on(AgentVerb.DISCARD, async (req) => this.target.discard(req));
    this.on(AgentVerb.SETTLE, async (req) => this.target.settle(req));
    this.on(AgentVerb.CPUINFO, async () => ({ image: await dumpCpuinfo(criu, workDirs) }));
    this.on(AgentVerb.CPUINFO_CHECK, async (req) => checkCpuinfo(criu, workDirs, req.image));
    this.on(AgentVerb.MIGRATABLE, async (req) => {
      const rec = this.workloads.require(req.name);
      await this.source.assertMigratable(rec, { targetPipeData: req.targetPipeData });
      return { localFiles: await this.source.localFiles(rec, this.fileDigests), rootDirs: await this.source.rootDirs(rec) };
    });
    this.on(AgentVerb.CHECK_FILES, async (req) => checkFiles(req.files, { digests: this.fileDigests }, req.dirs));
    this.on(AgentVerb.MIGRATION_RECORD, async (req) => this.migrationRecord(req));
    await nc.flush();
    await this.heartbeat.start();
  }

  /** The migration's image key, opened with this agent's key pair (bound to the migration id); null when none came. */
  private openImageKey(req: { migrationId: string; sealedImageKey?: Uint8Array | undefined }): Buffer | null {
    return req.sealedImageKey ? this.sealKeys.open(req.sealedImageKey, req.migrationId) : null;
  }

  /** Serves one verb of this host; a failed request is counted and logged (its error has been replied). */
  private on<V extends AgentVerb>(verb: V, handler: AgentVerbHandler<V>): void {
    this.subs.push(
      serveAgentVerb(this.deps.nc, this.opts.host, verb, handler, {
        onError: (err, subject) => {
          this.deps.metrics?.failed(subject, err.code);
          this.log.warn({ code: err.code, subject, details: err.details }, err.message);
        },
      }),
    );
  }

  async close(): Promise<void> {
    this.heartbeat.stop();
    for (const s of this.subs) s.unsubscribe();
    this.target.close();
  }

  /** A coordinator that restarted asks agents to register again by answering a heartbeat with NOT_FOUND. */
  forgetRegistration(): void {
    this.heartbeat.forgetRegistration();
  }

  /**
   * This agent's own record of a migration, for a coordinator that restarted and must decide
   * whether a restore it asked for happened (then it goes forward) or not (then it rolls back).
   */
  async migrationRecord(req: MigrationRef): Promise<MigrationRecordReply> {
    const inProgress = this.target.inProgress(req.migrationId);
    const rec = this.deps.inventory.get(req.workload);
    if (!rec) return { role: null, workloadState: null, alive: false, pid: null, inProgress };
    const alive = rec.state !== 'exited' && (await isAlive(rec.pid, rec.startTime));
    const role = rec.migration?.id === req.migrationId ? rec.migration.role : null;
    return { role, workloadState: rec.state, alive, pid: rec.pid, inProgress };
  }
}
