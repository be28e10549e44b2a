/**
 * The agent: one per host, root. It launches workloads, keeps their inventory, and carries out its
 * half of each migration step on the coordinator's request. It never decides a migration's fate:
 * freezing, thawing, killing and discarding happen only when the coordinator says so, which keeps
 * "the workload runs exactly once" a property of one state machine.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection, Subscription } from 'nats';
import {
  AgentVerb,
  CheckpointRequest,
  CpuinfoCheckRequest,
  EmptyRequest,
  ErrorCode,
  FerryError,
  MigrationRef,
  NameRequest,
  ReceiveRequest,
  RestoreRequest,
  RunRequest,
  encode,
  request,
  serve,
  subjects,
  toFerryError,
  PROTOCOL_VERSION,
  FULL_HEARTBEAT_EVERY,
  workloadsDigest,
  type CheckpointReply,
  type ReceiveReply,
  type CriuInfo,
  type Heartbeat,
  type MigrationRecordReply,
  type RestoreReply,
  type WorkloadInfo,
  type MountSpec,
  type PageServerEndpoint,
  type PageServerTls,
} from '@ferry/protocol';
import { ImageReceiver, MEMORY_PAGE_BYTES, pageRequestKey, requestPages, sendImage } from '@ferry/transfer';
import { SEEK_SET, type LinuxSyscalls } from '@ferry/native';
import { z } from 'zod';
import { CriuDriver } from './criu-driver';
import { readHostMemory } from './host-memory';
import { Inventory, type WorkloadRecord } from './inventory';
import { silentLogger, type Logger } from '@ferry/protocol';
import { isAlive, treeRssBytes } from './process-tree';
import { launchWorkload } from './workload-launcher';
import { WorkDirs } from './work-dir';
import type { AgentMetrics } from './agent-metrics';
import { ensureMounted, unmount } from './shared-mounts';
import { checkGhostLimit, closeInherited, findUnlinkedFiles, openPins, pinSharedFiles, removePins, type PinnedFile } from './unlinked-files';
import { listTree } from './process-tree';
import { checkCpuinfo, dumpCpuinfo } from './cpu-compat';
import { SerialLock } from './serial-lock';
import type { AgentOptions } from './agent-options';
import { LazyDump, LazyPagesDaemon, PageServer, sumPageImageBytes } from './criu-service';
import { LazyPageRelay } from './lazy-page-relay';
import { CriuDirectLazySource, CriuLazySource, LazyMemorySource, type PostCopySource } from './post-copy-source';
import { lazyRunBytes, lazyRunsOf } from './pagemap-image';
import { PagePrefetcher } from './page-prefetch';
import { criuTlsArgs, makePageServerTls, writePageServerClientTls, type PageServerTlsFiles } from './page-server-tls';
import { addServiceAddress, announceServiceAddress, hostAddresses, ipOf, removeServiceAddress } from './service-address';
import { criuLockTableFromDumpLog, dropCriuNetworkLock, inetSocketsOf, setTreeTcpRepair, unmigratableSockets, type RepairSyscalls } from './tcp-sockets';

/** Written next to CRIU's images: what the target needs to adopt the workload. */
interface WorkloadManifest {
  name: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  logPath: string;
  startedAt: string;
  logBytes: number;
  mounts: MountSpec[];
  /** Unlinked files on shared filesystems, pinned on the server, to reopen on the target. */
  pins: PinnedFile[];
  /** Its service address: the target configures it before restoring the connections bound to it. */
  address?: string;
}
const MANIFEST_FILE = 'ferry-manifest.json';
const LOG_COPY_FILE = 'ferry-workload.log';
const PROGRESS_INTERVAL_MS = 250;

interface IncomingMigration {
  migrationId: string;
  workload: string;
  dir: string;
  receiver: ImageReceiver;
  restoredPid: number | null;
  progressTimer: NodeJS.Timeout;
  /** Mount points receive() mounted for this migration (unmounted again on discard). */
  mountedPaths: string[];
  /** With the page-server transport: CRIU's page server writing the memory pages into `dir`. */
  pageServer?: PageServer;
  /** Post-copy: where the lazy pages are asked for, and the key their replies are sealed with. */
  transferId: string;
  pagesKey: Buffer | null;
  /** Post-copy, during the restore and until the last page: the page server CRIU's lazy-pages daemon asks. */
  relay?: LazyPageRelay;
}

export interface AgentDeps {
  nc: NatsConnection;
  /** Syscalls Node lacks (lseek of reopened pinned files). */
  syscalls: Pick<LinuxSyscalls, 'lseek'> & RepairSyscalls;
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
  private readonly incoming = new Map<string, IncomingMigration>();
  /** Migrations whose CRIU restore runs now (a coordinator reconciling must wait for its end). */
  private readonly restoring = new Set<string>();
  /** Checkpoints running now: a rollback's resume waits for the dump/send to end before thawing. */
  private readonly checkpoints = new Map<string, Promise<CheckpointReply>>();
  /** Post-copy, source side: lazy memory kept for the target until release or rollback. */
  private readonly lazySources = new Map<string, PostCopySource>();
  /** One CRIU dump at a time on this host, and one restore (see serial-lock.ts). */
  private readonly dumpLock = new SerialLock();
  private readonly restoreLock = new SerialLock();
  private readonly bootId = `b${randomBytes(6).toString('hex')}`;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatSeq = 0;
  private lastDigest = '';
  private registered = false;
  private closed = false;

  constructor(
    private readonly opts: AgentOptions,
    private readonly deps: AgentDeps,
  ) {
    this.log = (deps.logger ?? silentLogger).child({ host: opts.host });
  }

  get host(): string {
    return this.opts.host;
  }

  /** Answers requests, then registers and heartbeats until closed. */
  async start(): Promise<void> {
    await this.refreshInventory();
    const { nc } = this.deps;
    const on = <S extends z.ZodType>(verb: AgentVerb, schema: S, fn: (req: z.infer<S>) => Promise<Record<string, unknown> | void>) =>
      this.subs.push(
        serve(nc, subjects.agent(this.opts.host, verb), schema, fn, {
          onError: (err, subject) => {
            this.deps.metrics?.failed(subject, err.code);
            this.log.warn({ code: err.code, subject, details: err.details }, err.message);
          },
        }),
      );
    on(AgentVerb.PROBE, EmptyRequest, async () => ({ criu: this.deps.criuInfo, memory: await readHostMemory() }));
    on(AgentVerb.PS, EmptyRequest, async () => ({ workloads: await this.listWorkloads() }));
    on(AgentVerb.RUN, RunRequest, async (req) => ({ workload: await this.run(req) }));
    on(AgentVerb.STOP, NameRequest, async (req) => this.stop(req.name));
    on(AgentVerb.RECEIVE, ReceiveRequest, async (req) => this.receive(req));
    on(AgentVerb.CHECKPOINT, CheckpointRequest, async (req) => ({ ...(await this.checkpoint(req)) }));
    on(AgentVerb.RESTORE, RestoreRequest, async (req) => ({ ...(await this.restore(req)) }));
    on(AgentVerb.RELEASE, MigrationRef, async (req) => this.release(req));
    on(AgentVerb.RESUME, MigrationRef, async (req) => this.resume(req));
    on(AgentVerb.DISCARD, MigrationRef, async (req) => this.discard(req));
    on(AgentVerb.SETTLE, MigrationRef, async (req) => this.settle(req));
    on(AgentVerb.CPUINFO, EmptyRequest, async () => ({ image: await dumpCpuinfo(this.deps.criu, this.deps.workDirs) }));
    on(AgentVerb.MIGRATABLE, NameRequest, async (req) => {
      await this.assertMigratable(this.requireWorkload(req.name));
      return {};
    });
    on(AgentVerb.CPUINFO_CHECK, CpuinfoCheckRequest, async (req) => ({ ...(await checkCpuinfo(this.deps.criu, this.deps.workDirs, req.image)) }));
    on(AgentVerb.MIGRATION_RECORD, MigrationRef, async (req) => ({ ...(await this.migrationRecord(req)) }));
    await nc.flush();
    this.heartbeatTimer = setInterval(() => void this.beat(), this.opts.heartbeatIntervalMs);
    await this.beat();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const s of this.subs) s.unsubscribe();
    for (const inc of this.incoming.values()) {
      clearInterval(inc.progressTimer);
      inc.receiver.abort('agent shutting down');
      inc.pageServer?.stop();
    }
  }

  // ---- registration and heartbeat ----

  private async beat(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.registered) {
        await request(
          this.deps.nc,
          subjects.register(this.opts.host),
          {
            host: this.opts.host,
            address: this.opts.address,
            criu: this.deps.criuInfo,
            memory: await readHostMemory(),
            agentPid: process.pid,
            bootId: this.bootId,
          },
          z.object({}).passthrough(),
          { timeoutMs: 2_000 },
        );
        this.registered = true;
        this.log.info({ bootId: this.bootId }, 'registered with the coordinator');
      }
      const workloads = await this.listWorkloads();
      const digest = workloadsDigest(workloads);
      const seq = this.heartbeatSeq++;
      // The full list only when it changed, and every few beats so a restarted coordinator catches up.
      const full = digest !== this.lastDigest || seq % FULL_HEARTBEAT_EVERY === 0;
      this.lastDigest = digest;
      const hb: Heartbeat = {
        v: PROTOCOL_VERSION,
        host: this.opts.host,
        bootId: this.bootId,
        address: this.opts.address,
        criu: this.deps.criuInfo,
        seq,
        memory: await readHostMemory(),
        workloadsDigest: digest,
        ...(full ? { workloads } : {}),
      };
      this.deps.nc.publish(subjects.heartbeat(this.opts.host), encode(hb));
    } catch (err) {
      // The coordinator may not be up yet or may be restarting; registration is retried next beat.
      this.log.debug({ err: toFerryError(err).message }, 'coordinator not reachable');
    }
  }

  /** A coordinator that restarted asks agents to register again by answering a heartbeat with NOT_FOUND. */
  forgetRegistration(): void {
    this.registered = false;
  }

  // ---- workloads ----

  private async refreshInventory(): Promise<void> {
    for (const rec of this.deps.inventory.all()) {
      if (rec.state !== 'exited' && !(await isAlive(rec.pid, rec.startTime))) {
        rec.state = 'exited';
        await this.deps.inventory.put(rec);
        this.log.info({ workload: rec.name, pid: rec.pid }, 'workload exited');
      }
    }
  }

  private async listWorkloads(): Promise<WorkloadInfo[]> {
    await this.refreshInventory();
    const out: WorkloadInfo[] = [];
    for (const r of this.deps.inventory.all()) out.push(await this.describe(r));
    this.deps.metrics?.inventory(out);
    return out;
  }

  private async describe(r: WorkloadRecord): Promise<WorkloadInfo> {
    return {
      name: r.name,
      host: this.opts.host,
      state: r.state,
      pid: r.pid,
      rssBytes: r.state === 'exited' ? 0 : await treeRssBytes(r.pid).catch(() => 0),
      argv: r.argv,
      startedAt: r.startedAt,
      exitCode: r.exitCode,
      mounts: r.mounts ?? [],
      ...(r.address ? { address: r.address } : {}),
    };
  }

  private requireWorkload(name: string): WorkloadRecord {
    const rec = this.deps.inventory.get(name);
    if (!rec) throw new FerryError(ErrorCode.NOT_FOUND, `no workload named ${name} on ${this.opts.host}`);
    return rec;
  }

  async run(req: RunRequest): Promise<WorkloadInfo> {
    const existing = this.deps.inventory.get(req.name);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `workload ${req.name} already runs on ${this.opts.host}`);
    }
    const logPath = join(this.opts.dataDir, 'workloads', req.name, 'output.log');
    await mkdir(join(this.opts.dataDir, 'workloads', req.name), { recursive: true, mode: 0o700 });
    // A new workload starts a new log, even if an earlier one of the same name left one.
    await writeFile(logPath, '', { mode: 0o600 });
    await this.mountAll(req.mounts);
    if (req.address) {
      await addServiceAddress(req.address, this.opts.address);
      await announceServiceAddress(req.address, this.opts.address);
    }
    const cwd = req.cwd ?? '/';
    let launched: Awaited<ReturnType<typeof launchWorkload>>;
    try {
      launched = await launchWorkload({ name: req.name, argv: req.argv, env: req.env, cwd, logPath });
    } catch (err) {
      if (req.address) await removeServiceAddress(req.address, this.opts.address).catch(() => undefined);
      throw err;
    }
    const rec: WorkloadRecord = {
      name: req.name,
      pid: launched.pid,
      startTime: launched.startTime,
      argv: req.argv,
      env: req.env,
      cwd,
      logPath,
      state: 'running',
      startedAt: new Date().toISOString(),
      exitCode: null,
      migration: null,
      mounts: req.mounts,
      ...(req.address ? { address: req.address } : {}),
    };
    await this.deps.inventory.put(rec);
    this.log.info({ workload: req.name, pid: launched.pid, address: req.address }, 'workload launched');
    return this.describe(rec);
  }

  async stop(name: string): Promise<void> {
    const rec = this.requireWorkload(name);
    if (rec.migration) throw new FerryError(ErrorCode.CONFLICT, `workload ${name} is being migrated (${rec.migration.id})`);
    if (await isAlive(rec.pid, rec.startTime)) await this.deps.criu.kill(rec.pid);
    if (rec.address) await removeServiceAddress(rec.address, this.opts.address);
    await this.deps.inventory.remove(name);
    this.log.info({ workload: name }, 'workload stopped');
  }

  /** Mounts each filesystem unless already there; returns the paths this call mounted. */
  private async mountAll(mounts: MountSpec[]): Promise<string[]> {
    const made: string[] = [];
    for (const spec of mounts) {
      const { mounted } = await ensureMounted(spec);
      if (mounted) {
        made.push(spec.path);
        await this.deps.inventory.setOwnedMount(spec.path, true);
        this.log.info({ fs: spec.name, path: spec.path }, 'mounted shared filesystem');
      }
    }
    return made;
  }

  /** Unmounts the given mount points we mounted ourselves once no workload of ours uses them. */
  private async unmountUnused(paths: string[], except?: string): Promise<void> {
    for (const path of paths) {
      if (!this.deps.inventory.isOwnedMount(path) || this.deps.inventory.mountInUse(path, except)) continue;
      try {
        await unmount(path);
        await this.deps.inventory.setOwnedMount(path, false);
        this.log.info({ path }, 'unmounted unused shared filesystem');
      } catch (err) {
        this.log.warn({ path, err: (err as Error).message }, 'could not unmount');
      }
    }
  }

  // ---- migration: target side ----

  async receive(req: ReceiveRequest): Promise<ReceiveReply> {
    if (this.incoming.has(req.migrationId)) throw new FerryError(ErrorCode.CONFLICT, `migration ${req.migrationId} is already being received`);
    const existing = this.deps.inventory.get(req.workload);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `a workload named ${req.workload} already runs on ${this.opts.host}`);
    }
    // Before the source freezes anything: a filesystem this host cannot mount fails the migration here.
    const mountedPaths = await this.mountAll(req.mounts);
    const dir = await this.deps.workDirs.create(req.migrationId);
    const receiver = ImageReceiver.start(this.deps.nc, req.transferId, dir, {
      idleTimeoutMs: req.idleTimeoutMs,
      ...(req.firstFrameTimeoutMs !== undefined ? { firstFrameTimeoutMs: req.firstFrameTimeoutMs } : {}),
      maxTotalBytes: this.opts.maxImageBytes,
      maxFileBytes: this.opts.maxImageBytes,
      // The address we registered with is the one the source agent can reach us on.
      directListenAddress: this.opts.address,
      imageKey: req.imageKey ?? null,
      logger: this.log.child({ migrationId: req.migrationId }),
    });
    // Failures surface through restore() or discard(); keep an unobserved rejection from crashing us.
    receiver.done.then((stats) => this.deps.metrics?.received(stats.bytes)).catch(() => undefined);
    const progressTimer = setInterval(() => {
      const p = receiver.progress();
      this.deps.nc.publish(
        subjects.event('progress'),
        encode({ v: PROTOCOL_VERSION, migrationId: req.migrationId, bytes: p.bytes, files: p.files }),
      );
    }, PROGRESS_INTERVAL_MS);
    receiver.done.finally(() => clearInterval(progressTimer)).catch(() => undefined);
    const incoming: IncomingMigration = {
      migrationId: req.migrationId,
      workload: req.workload,
      dir,
      receiver,
      restoredPid: null,
      progressTimer,
      mountedPaths,
      transferId: req.transferId,
      pagesKey: req.imageKey ? pageRequestKey(req.imageKey) : null,
    };
    this.incoming.set(req.migrationId, incoming);
    // The source starts sending as soon as we reply; the server must have our subscription first.
    await receiver.ready();
    let clientTls: PageServerTls | undefined;
    if (req.pageServer) {
      let serverTls: PageServerTlsFiles | undefined;
      if (req.pageServerTls) {
        const made = await makePageServerTls(this.deps.workDirs.tlsPathFor(req.migrationId), this.opts.address);
        serverTls = made.server;
        clientTls = made.client;
      }
      incoming.pageServer = await PageServer.start(this.deps.criu, dir, this.opts.address, this.log.child({ migrationId: req.migrationId }), serverTls);
    }
    this.log.info({ migrationId: req.migrationId, source: req.source, pageServer: req.pageServer, pageServerTls: clientTls !== undefined }, 'receiving image');
    const ps = incoming.pageServer;
    return ps ? { pageServer: { address: ps.address, port: ps.port, ...(clientTls ? { tls: clientTls } : {}) } } : {};
  }

  async restore(req: RestoreRequest): Promise<RestoreReply> {
    const inc = this.incoming.get(req.migrationId);
    if (!inc) throw new FerryError(ErrorCode.NOT_FOUND, `no image received for migration ${req.migrationId}`);
    if (inc.workload !== req.workload) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `migration ${req.migrationId} carries ${inc.workload}, not ${req.workload}`);
    await inc.receiver.done.catch((err) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `image for ${req.workload} incomplete: ${toFerryError(err).message}`, { cause: err });
    });
    // The page server exits 0 only once the dump sent every page.
    await inc.pageServer?.done.catch((err) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `memory pages for ${req.workload} incomplete: ${toFerryError(err).message}`, { cause: err });
    });
    const manifest = await this.readManifest(inc.dir, req.workload);
    await this.placeWorkloadLog(inc.dir, manifest);
    const started = Date.now();
    this.restoring.add(req.migrationId);
    const sys = this.deps.syscalls;
    const inherited = openPins(manifest.pins ?? [], (fd, pos) => sys.lseek(fd, pos, SEEK_SET));
    let restored: Awaited<ReturnType<CriuDriver['restore']>>;
    let lazy: LazyPagesDaemon | undefined;
    let prefetch: PagePrefetcher | undefined;
    try {
      // Its connections are bound to the service address: it must be here before CRIU repairs them.
      if (manifest.address) await addServiceAddress(manifest.address, this.opts.address);
      if (req.postCopy && req.lazyPageServer) {
        // The lazy memory is in the source's CRIU: ours fetches it from there, over mutual TLS.
        const ps = req.lazyPageServer;
        const tls = ps.tls ? await writePageServerClientTls(this.deps.workDirs.tlsPathFor(req.migrationId), ps.tls) : undefined;
        lazy = await LazyPagesDaemon.start(this.deps.criu, inc.dir, { address: ps.address, port: ps.port, ...(tls ? { tls } : {}) });
      } else if (req.postCopy) {
        // The lazy memory is still on the source: CRIU's daemon asks the relay, the relay asks the source.
        const { transferId, pagesKey } = inc;
        prefetch = new PagePrefetcher(
          (pid, vaddr, nr) => requestPages(this.deps.nc, transferId, { pid, vaddr, nr }, { key: pagesKey ?? undefined }),
          await lazyRunsOf(inc.dir, await readdir(inc.dir)),
        );
        const pages = prefetch;
        inc.relay = await LazyPageRelay.start((pid, vaddr, nr) => pages.get(pid, vaddr, nr), this.log.child({ migrationId: req.migrationId }));
        inc.relay.done
          .finally(() => {
            pages.stop();
            this.log.info({ migrationId: req.migrationId, ...pages.stats, fetchMs: Math.round(pages.stats.fetchMs) }, 'post-copy prefetch done');
          })
          .catch(() => undefined);
        lazy = await LazyPagesDaemon.start(this.deps.criu, inc.dir, { address: '127.0.0.1', port: inc.relay.port, relay: true });
      } else if (req.lazyPages) lazy = await LazyPagesDaemon.start(this.deps.criu, inc.dir);
      restored = await this.restoreLock.run(() =>
        this.deps.criu.restore({
          imagesDir: inc.dir,
          pidFile: join(inc.dir, 'restored.pid'),
          inheritFds: inherited,
          tcpEstablished: manifest.address !== undefined,
          extraArgs: lazy ? ['--lazy-pages'] : [],
        }),
      );
    } catch (err) {
      lazy?.stop();
      inc.relay?.stop('the restore failed');
      if (manifest.address) await removeServiceAddress(manifest.address, this.opts.address).catch(() => undefined);
      throw err;
    } finally {
      this.restoring.delete(req.migrationId);
      closeInherited(inherited);
    }
    const resumedAt = Date.now();
    // Running: from now on the memory is pulled ahead of its faults (not before, to leave the CPU to the restore).
    prefetch?.start();
    this.deps.metrics?.restored(resumedAt - started);
    // CRIU unlocked the connections at the end of the restore; the peers learn the new MAC now.
    if (manifest.address) {
      await announceServiceAddress(manifest.address, this.opts.address).catch((err) =>
        this.log.warn({ migrationId: req.migrationId, err: toFerryError(err).message }, 'gratuitous ARP failed; peers re-learn the address when their ARP entry expires'),
      );
    }
    // The restored workload holds its own copies of the pinned files now; the names can go.
    await removePins(manifest.pins ?? []);
    inc.restoredPid = restored.pid;
    await this.deps.inventory.put({
      name: manifest.name,
      pid: restored.pid,
      startTime: restored.startTime,
      argv: manifest.argv,
      env: manifest.env,
      cwd: manifest.cwd,
      logPath: manifest.logPath,
      state: 'running',
      startedAt: manifest.startedAt,
      exitCode: null,
      migration: { id: req.migrationId, role: 'target' },
      mounts: manifest.mounts ?? [],
      ...(manifest.address ? { address: manifest.address } : {}),
    });
    if (lazy) {
      // Running already, but not confirmed before every page is in: until then the source keeps
      // its frozen copy, and a failure here rolls back (discard kills this copy, the source thaws).
      // Post-copy: the relay's error says why (the source's answer), CRIU's only that it gave up.
      const filled = inc.relay ? Promise.all([lazy.done, inc.relay.done]) : lazy.done;
      await filled.catch(async (err) => {
        // This copy dies before its daemon: nothing of it may run once the source may thaw.
        await this.deps.criu.kill(restored.pid).catch(() => undefined);
        lazy?.stop();
        const why = inc.relay ? await inc.relay.done.then(() => err, (relayErr: unknown) => relayErr) : err;
        inc.relay?.stop('the lazy restore failed');
        throw new FerryError(ErrorCode.RESTORE_FAILED, `lazy restore of ${req.workload} could not fill its memory: ${toFerryError(why).message}`, { cause: why });
      });
    }
    // Pages that came after the resume: counted by the relay, or (CRIU fetching them itself) every
    // lazy page the images name, all of which CRIU's daemon had before it exited 0.
    const fetched = inc.relay
      ? (await inc.relay.done).pages * MEMORY_PAGE_BYTES
      : req.postCopy && req.lazyPageServer
        ? lazyRunBytes(await lazyRunsOf(inc.dir, await readdir(inc.dir)))
        : 0;
    this.log.info({ migrationId: req.migrationId, workload: req.workload, pid: restored.pid, ms: resumedAt - started, lazy: req.lazyPages }, 'workload restored');
    const pageBytes = inc.pageServer ? await sumPageImageBytes(inc.dir) : fetched;
    // The memory pages came by the page server, not the stream: they count as received all the same.
    if (pageBytes > 0) this.deps.metrics?.received(pageBytes);
    return { pid: restored.pid, restoreMs: resumedAt - started, resumedAt, pageBytes, pullMs: lazy ? Date.now() - resumedAt : 0 };
  }

  /** The coordinator confirmed the whole migration: the restored copy is ours for good. */
  async settle(req: MigrationRef): Promise<void> {
    const rec = this.deps.inventory.get(req.workload);
    if (rec?.migration?.id === req.migrationId) {
      rec.migration = null;
      await this.deps.inventory.put(rec);
    }
    const inc = this.incoming.get(req.migrationId);
    if (inc) {
      clearInterval(inc.progressTimer);
      this.incoming.delete(req.migrationId);
    }
    await this.deps.workDirs.remove(req.migrationId);
  }

  async discard(req: MigrationRef): Promise<void> {
    const inc = this.incoming.get(req.migrationId);
    if (inc) {
      clearInterval(inc.progressTimer);
      inc.receiver.abort('migration rolled back');
      inc.pageServer?.stop();
      inc.relay?.stop('migration rolled back');
      this.incoming.delete(req.migrationId);
    }
    const rec = this.deps.inventory.get(req.workload);
    const address = rec?.address ?? (await this.manifestOf(req.migrationId)).address;
    if (rec?.migration?.id === req.migrationId && rec.migration.role === 'target') {
      if (await isAlive(rec.pid, rec.startTime)) {
        // The source keeps these connections: closing ours must not reset them, so in repair mode first (silent close).
        if (rec.address) await setTreeTcpRepair(this.deps.syscalls, await listTree(rec.pid), true);
        await this.deps.criu.kill(rec.pid);
      }
      await this.deps.inventory.remove(req.workload);
      this.log.warn({ migrationId: req.migrationId, workload: req.workload }, 'discarded restored copy');
    }
    // The address goes back with the workload to the source (which announces it).
    if (address && !this.deps.inventory.all().some((w) => w.address === address)) await removeServiceAddress(address, this.opts.address);
    await removePins(await this.pinsOf(req.migrationId));
    await this.deps.workDirs.remove(req.migrationId);
    if (inc) await this.unmountUnused(inc.mountedPaths);
  }

  /** Pins a migration's manifest lists (empty when it never got that far). Source and target share them. */
  private async pinsOf(migrationId: string): Promise<PinnedFile[]> {
    return (await this.manifestOf(migrationId)).pins ?? [];
  }

  /** What a migration's manifest says, as far as it got written (empty when it never did). */
  private async manifestOf(migrationId: string): Promise<Partial<WorkloadManifest>> {
    try {
      return JSON.parse(await readFile(join(this.deps.workDirs.pathFor(migrationId), MANIFEST_FILE), 'utf8')) as Partial<WorkloadManifest>;
    } catch {
      return {};
    }
  }

  private async readManifest(dir: string, workload: string): Promise<WorkloadManifest> {
    let m: WorkloadManifest;
    try {
      m = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as WorkloadManifest;
    } catch (err) {
      throw new FerryError(ErrorCode.RESTORE_FAILED, `image has no readable ${MANIFEST_FILE}`, { cause: err });
    }
    if (m.name !== workload) throw new FerryError(ErrorCode.RESTORE_FAILED, `image is of ${m.name}, expected ${workload}`);
    return m;
  }

  /**
   * CRIU reopens the workload's log by path and refuses a file whose size differs from the dump
   * ("File ... has bad size"). On a shared filesystem the file is already there and identical;
   * elsewhere the copy that travelled with the image is put in place.
   */
  private async placeWorkloadLog(dir: string, m: WorkloadManifest): Promise<void> {
    const current = await stat(m.logPath).catch(() => null);
    if (current && current.size === m.logBytes) return;
    await mkdir(join(m.logPath, '..'), { recursive: true, mode: 0o700 });
    await copyFile(join(dir, LOG_COPY_FILE), m.logPath);
  }

  // ---- migration: source side ----

  async checkpoint(req: CheckpointRequest): Promise<CheckpointReply> {
    const running = this.checkpointNow(req);
    this.checkpoints.set(req.migrationId, running);
    try {
      return await running;
    } finally {
      this.checkpoints.delete(req.migrationId);
    }
  }

  /**
   * This agent's own record of a migration, for a coordinator that restarted and must decide
   * whether a restore it asked for happened (then it goes forward) or not (then it rolls back).
   */
  async migrationRecord(req: MigrationRef): Promise<MigrationRecordReply> {
    const inProgress = this.restoring.has(req.migrationId) ? 'restoring' : this.incoming.has(req.migrationId) ? 'receiving' : null;
    const rec = this.deps.inventory.get(req.workload);
    if (!rec) return { role: null, workloadState: null, alive: false, pid: null, inProgress };
    const alive = rec.state !== 'exited' && (await isAlive(rec.pid, rec.startTime));
    const role = rec.migration?.id === req.migrationId ? rec.migration.role : null;
    return { role, workloadState: rec.state, alive, pid: rec.pid, inProgress };
  }

  private async checkpointNow(req: CheckpointRequest): Promise<CheckpointReply> {
    const rec = this.requireWorkload(req.workload);
    if (rec.state !== 'running' || !(await isAlive(rec.pid, rec.startTime))) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${req.workload} is not running (${rec.state})`);
    }
    if (rec.migration) throw new FerryError(ErrorCode.CONFLICT, `workload ${req.workload} is already in migration ${rec.migration.id}`);
    // Checked in the pre-flight already, and again here: the workload ran on since.
    const unlinked = await this.assertMigratable(rec);
    const pins = await pinSharedFiles(unlinked, req.migrationId);
    const dir = await this.deps.workDirs.create(req.migrationId);
    // Recorded before freezing: if we crash while it is frozen, the next start knows to ask.
    rec.migration = { id: req.migrationId, role: 'source' };
    rec.state = 'frozen';
    await this.deps.inventory.put(rec);
    let frozenAt = Date.now();
    let dumpMs: number;
    let pageBytes = 0;
    // The page server's client credentials exist on this host only for the dump (page-server-tls.ts).
    const tlsDir = this.deps.workDirs.tlsPathFor(req.migrationId);
    // Post-copy by CRIU's own lazy dump where this host allows it (CriuInfo.lazyDump): the memory is
    // never written, CRIU serves it from its pipes. Not for workloads with TCP connections: their
    // network lock's life around a lazy dump is untested, so those take the rewritten dump.
    const lazyDir = this.deps.workDirs.lazyPathFor(req.migrationId);
    let lazyDump: LazyDump | undefined;
    let lazyTls: Awaited<ReturnType<typeof makePageServerTls>> | undefined;
    try {
      const tlsArgs = req.pageServer?.tls ? criuTlsArgs(await writePageServerClientTls(tlsDir, req.pageServer.tls)) : [];
      const dumpRequest = {
        pid: rec.pid,
        imagesDir: dir,
        leaveStopped: true,
        externalFiles: pins.map((p) => p.key),
        // Its connections are dumped in TCP repair mode and stay locked (nftables) while it is frozen.
        tcpEstablished: rec.address !== undefined,
        // Memory pages go straight to the target's page server; the other images stay here for the stream.
        extraArgs: req.pageServer ? ['--page-server', '--address', req.pageServer.address, '--port', String(req.pageServer.port), ...tlsArgs] : [],
      };
      const native = req.postCopy && this.opts.lazyDump && this.deps.criuInfo.lazyDump && rec.address === undefined;
      if (req.postCopy) await mkdir(lazyDir, { mode: 0o700 });
      const dumped = await this.dumpLock.run(async () => {
        // Downtime starts when CRIU freezes the tree, not while waiting for another dump.
        frozenAt = Date.now();
        if (!native) return this.deps.criu.dump(dumpRequest);
        // Held only until the images are written: CRIU's parasite is gone by then, another dump may start.
        // With TLS its page server listens on this host's address, for the target's CRIU to connect
        // to (the roles of page-server-tls.ts swapped); else on loopback, for this agent only.
        lazyTls = this.deps.criuInfo.pageServerTls ? await makePageServerTls(join(lazyDir, 'tls'), this.opts.address) : undefined;
        lazyDump = await LazyDump.start(this.deps.criu, dumpRequest, join(lazyDir, 'dump.log'), lazyTls ? this.opts.address : '127.0.0.1', lazyTls?.server);
        // While CRIU serves the pages it holds the tree; if it dies, this keeps the tree stopped.
        await this.deps.criu.holdStopped(rec.pid);
        return { durationMs: lazyDump.durationMs, logPath: join(lazyDir, 'dump.log'), memoryBytesWritten: 0 };
      }).finally(() => rm(tlsDir, { recursive: true, force: true }));
      dumpMs = dumped.durationMs;
      if (rec.address) {
        // The address follows the workload: off this host now, on the target before its restore.
        const lockTable = criuLockTableFromDumpLog(await readFile(dumped.logPath, 'utf8').catch(() => ''));
        rec.migration = { id: req.migrationId, role: 'source', ...(lockTable ? { lockTable } : {}) };
        await this.deps.inventory.put(rec);
        await removeServiceAddress(rec.address, this.opts.address);
      }
      // With a page server the memory left during the dump, by CRIU's connection: part of what this migration moved.
      pageBytes = req.pageServer ? (dumped.memoryBytesWritten ?? 0) : 0;
      this.deps.metrics?.dumped(dumpMs);
    } catch (err) {
      // A lazy dump that started holds the tree: it goes first (the tree stays stopped, then thawed below).
      (lazyDump as LazyDump | undefined)?.stop();
      // A dump that succeeded left connections locked in repair mode (moving the address failed after it): undo that first.
      if (rec.migration?.lockTable) await this.reviveSourceNetwork(rec).catch((e) => this.log.error({ err: toFerryError(e).message }, 'could not revive the connections'));
      // CRIU resumes the tree itself when a dump fails; make sure of it and forget the mark.
      await this.deps.criu.thaw(rec.pid).catch(() => undefined);
      await removePins(pins);
      rec.migration = null;
      rec.state = (await isAlive(rec.pid, rec.startTime)) ? 'running' : 'exited';
      await this.deps.inventory.put(rec);
      await this.deps.workDirs.remove(req.migrationId);
      throw err;
    }
    const logBytes = (await stat(rec.logPath).catch(() => null))?.size ?? 0;
    if (logBytes > 0) await copyFile(rec.logPath, join(dir, LOG_COPY_FILE));
    else await writeFile(join(dir, LOG_COPY_FILE), '');
    const manifest: WorkloadManifest = {
      name: rec.name,
      argv: rec.argv,
      env: rec.env,
      cwd: rec.cwd,
      logPath: rec.logPath,
      startedAt: rec.startedAt,
      logBytes,
      mounts: rec.mounts ?? [],
      pins,
      ...(rec.address ? { address: rec.address } : {}),
    };
    await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(manifest), { mode: 0o600 });
    let lazyBytes = 0;
    const log = this.log.child({ migrationId: req.migrationId });
    // Kept until release or rollback, which close it. A lazy dump is registered at once (as a
    // direct source: closing it waits for CRIU to end), so a failed send still ends it.
    const holding = lazyDump;
    const lazyRuns = holding
      ? await lazyRunsOf(dir, await readdir(dir)).catch((err: unknown) => {
          // Not registered yet, so nothing else would end it: CRIU dies, the tree for the rollback to thaw.
          holding.stop();
          throw err;
        })
      : [];
    if (lazyDump) {
      lazyBytes = lazyRunBytes(lazyRuns);
      this.lazySources.set(req.migrationId, new CriuDirectLazySource(lazyDump, lazyBytes));
    } else if (req.postCopy) {
      // The images sent below are what the rewrite leaves.
      const source = await LazyMemorySource.prepare(this.deps.nc, req.transferId, dir, lazyDir, req.imageKey ?? null, log);
      this.lazySources.set(req.migrationId, source);
      lazyBytes = source.lazyBytes;
    }
    const sent = await sendImage(this.deps.nc, req.transferId, dir, {
      idleTimeoutMs: req.idleTimeoutMs,
      // With the page server, only the small images remain: they take the best stream there is.
      // An injected frame fault lives at the NATS edge (fault-injection.ts): such an agent sends over NATS.
      transport: this.opts.faults.corruptImageFrame ? 'nats' : req.transport === 'page-server' ? 'auto' : req.transport,
      imageKey: req.imageKey ?? null,
      logger: this.log.child({ migrationId: req.migrationId }),
    });
    let lazyPageServer: PageServerEndpoint | undefined;
    if (lazyDump) {
      if (lazyTls && sent.transport === 'direct') {
        // The hosts reach each other: the target's CRIU fetches straight from ours, over mutual TLS.
        lazyPageServer = { address: lazyDump.address, port: lazyDump.port, tls: lazyTls.client };
      } else {
        // Through NATS: this agent is CRIU's client and answers the target's page requests.
        const running = lazyDump;
        const relay = await CriuLazySource.start(this.deps.nc, req.transferId, running, lazyRuns, req.imageKey ?? null, log, lazyTls?.client).catch((err: unknown) => {
          // Nobody would end its page session: CRIU dies, the tree for the rollback to thaw.
          running.stop();
          throw err;
        });
        this.lazySources.set(req.migrationId, relay);
      }
    }
    this.deps.metrics?.sent(sent.bytes + pageBytes, sent.elapsedMs + (pageBytes > 0 ? dumpMs : 0));
    this.log.info({ migrationId: req.migrationId, bytes: sent.bytes, dumpMs, transferMs: sent.elapsedMs, transport: sent.transport }, 'image sent');
    return {
      dumpMs: Math.round(dumpMs),
      transferMs: Math.round(sent.elapsedMs),
      bytes: sent.bytes + pageBytes,
      files: sent.files,
      frozenAt,
      transport: req.pageServer ? 'page-server' : sent.transport,
      lazyBytes,
      ...(lazyPageServer ? { lazyPageServer } : {}),
    };
  }

  /**
   * What must hold before a workload is frozen, else FAILED_PRECONDITION: its unlinked-but-open
   * local files fit the ghost limit (shared ones are pinned and travel by name), and every inet
   * socket can move (tcp-sockets.ts). Returns the unlinked files found, for the pins.
   */
  private async assertMigratable(rec: WorkloadRecord): Promise<Awaited<ReturnType<typeof findUnlinkedFiles>>> {
    const tree = await listTree(rec.pid);
    const unlinked = await findUnlinkedFiles(tree);
    checkGhostLimit(unlinked, this.opts.ghostLimitBytes);
    const serviceIp = rec.address ? ipOf(rec.address) : null;
    const socketProblems = unmigratableSockets(
      await inetSocketsOf(tree),
      serviceIp,
      new Set((await hostAddresses()).map((a) => a.ip).filter((ip) => ip !== serviceIp)),
    );
    if (socketProblems.length > 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${rec.name} holds sockets that cannot migrate: ${socketProblems.slice(0, 5).join('; ')}`, { details: socketProblems });
    }
    return unlinked;
  }

  /** Target confirmed: the frozen copy must never run again. */
  async release(req: MigrationRef): Promise<void> {
    const rec = this.deps.inventory.get(req.workload);
    if (rec && rec.migration?.id === req.migrationId && rec.migration.role === 'source') {
      // Its sockets are still in repair mode, so this kill sends the peers nothing; then the lock can go.
      if (await isAlive(rec.pid, rec.startTime)) await this.deps.criu.kill(rec.pid);
      await this.closeLazySource(req.migrationId);
      if (rec.migration.lockTable) await dropCriuNetworkLock(rec.migration.lockTable);
      await this.deps.inventory.remove(req.workload);
      this.log.info({ migrationId: req.migrationId, workload: req.workload }, 'released frozen copy');
      // The source copy is gone: its shared filesystems are unmounted unless another workload uses them.
      await this.unmountUnused((rec.mounts ?? []).map((m) => m.path));
    }
    await this.closeLazySource(req.migrationId);
    await removePins(await this.pinsOf(req.migrationId));
    await this.deps.workDirs.remove(req.migrationId);
  }

  /** Post-copy: the target has every page (release) or gave up (rollback); nobody asks for more. */
  private async closeLazySource(migrationId: string): Promise<void> {
    const source = this.lazySources.get(migrationId);
    if (!source) return;
    this.lazySources.delete(migrationId);
    this.log.info({ migrationId, bytesServed: source.bytesServed, lazyBytes: source.lazyBytes }, 'post-copy source closed');
    await source.close();
  }

  /**
   * Rollback of a workload with a service address, before the thaw: the address back on this
   * host (announced), its connections out of repair mode, CRIU's lock dropped. They carry on where
   * they were; the peers saw a pause.
   */
  private async reviveSourceNetwork(rec: WorkloadRecord): Promise<void> {
    if (rec.address) {
      await addServiceAddress(rec.address, this.opts.address);
      await announceServiceAddress(rec.address, this.opts.address);
    }
    const changed = await setTreeTcpRepair(this.deps.syscalls, await listTree(rec.pid), false);
    if (rec.migration?.lockTable) await dropCriuNetworkLock(rec.migration.lockTable);
    this.log.info({ workload: rec.name, address: rec.address, connections: changed }, 'connections revived on the source');
  }

  /** Rollback: thaw the frozen copy so it carries on here. */
  async resume(req: MigrationRef): Promise<void> {
    // Thawing under a dump still writing would corrupt it; CRIU ends it soon once the target discards.
    await this.checkpoints.get(req.migrationId)?.catch(() => undefined);
    // A lazy dump holds the tree (ptrace) until its page session ends: only then can it thaw.
    await this.closeLazySource(req.migrationId);
    const rec = this.deps.inventory.get(req.workload);
    if (rec && rec.migration?.id === req.migrationId && rec.migration.role === 'source') {
      if (!(await isAlive(rec.pid, rec.startTime))) {
        throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${req.workload} died while frozen`);
      }
      if (rec.address) await this.reviveSourceNetwork(rec);
      await this.deps.criu.thaw(rec.pid);
      rec.migration = null;
      rec.state = 'running';
      await this.deps.inventory.put(rec);
      this.log.warn({ migrationId: req.migrationId, workload: req.workload }, 'thawed after rollback');
    }
    await removePins(await this.pinsOf(req.migrationId));
    await this.deps.workDirs.remove(req.migrationId);
  }
}
