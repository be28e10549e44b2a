/**
 * The target half of a migration: receives the image (and with the page-server path runs CRIU's
 * page server for the memory), restores the workload eagerly, lazily or by post-copy as the
 * coordinator asked, and then keeps it (settle) or kills it (discard) on the coordinator's word.
 */
import { readdir } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import {
  encode,
  ErrorCode,
  FerryError,
  PAGE_BYTES,
  PROTOCOL_VERSION,
  subjects,
  toFerryError,
  type MigrationRecordReply,
  type MigrationRef,
  type MountSpec,
  openPageServerTls,
  pageServerTlsKey,
  sealPageServerTls,
  type PageServerClientTls,
  type PageServerEndpoint,
  type ReceiveReply,
  type ReceiveRequest,
  type RestoreReply,
  type RestoreRequest,
} from '@ferry/protocol';
import { ImageReceiver, pageRequestKey } from '@ferry/transfer';
import { aeadInPlace, SEEK_SET } from '@ferry/native';
import type { CriuDriver } from '../criu/criu-driver';
import { PageServer, sumPageImageBytes } from '../criu/criu-service';
import { checkClaimedMemory, lazyRunBytes, lazyRunsOf } from '../criu/pagemap-image';
import { makePageServerTls, type PageServerTlsFiles } from '../criu/page-server-tls';
import { isAlive, listTree } from '../host/process-tree';
import { addServiceAddress, announceServiceAddress, removeServiceAddress } from '../host/service-address';
import { checkLocalDirs, DEFAULT_LOCAL_DIR_ROOTS } from '../host/local-dirs';
import { setTreeTcpRepair } from '../host/tcp-sockets';
import { criuRestoreLinkArgs } from '../host/workload-network';
import { closeInherited, openPins, removePins } from '../host/unlinked-files';
import { startLocalLazyMemory, startLocalServedMemory, startPostCopyMemory, startTunnelledPostCopyMemory, type LazyMemoryFeed, type OpenedPageServerEndpoint } from '../post-copy/lazy-memory-feed';
import type { PageServerSession } from '../post-copy/lazy-page-relay';
import { assertLocalDirsFree, LocalDirReceiver } from './local-dir-copy';
import { checkManifestForTarget, manifestIn, pinProblem, placeWorkloadLog, readManifest } from './manifest-file';
import { nativeFilePump } from './native-file-pump';
import { applyPageDeltas } from './page-delta';
import { PageTunnelReceiver } from './page-tunnel';
import { criuRestoreRootArgs, ISOLATED_ROOT_TCP_ARGS, isolatedRootPlan, makeRootSkeleton, removeRootSkeleton } from '../host/isolated-root';
import { workloadRootDir } from '../workloads/workloads';
import { connectionsMove, hasOwnRoot, linkOf } from '../workloads/inventory';
import type { MigrationDeps } from './migration-deps';
import { SerialLock } from './serial-lock';

/** How often the target reports the bytes received so far (progress events, dashboard). */
const PROGRESS_INTERVAL_MS = 250;

interface IncomingMigration {
  migrationId: string;
  workload: string;
  dir: string;
  receiver: ImageReceiver;
  progressTimer: NodeJS.Timeout;
  /** Mount points receive() mounted for this migration (unmounted again on discard). */
  mountedPaths: string[];
  /** Every shared filesystem the coordinator gave for it: the only places its pins may be. */
  mountRoots: string[];
  /** Those filesystems as the coordinator gave them: what the restored workload is recorded with (never the image's manifest's). */
  mounts: MountSpec[];
  /** The workload's service address as the coordinator gave it: the only one this host configures for it. */
  address?: string;
  /** With the page-server path: CRIU's page server writing the memory pages into `dir`. */
  pageServer?: PageServer;
  /** With the page-tunnel path: the tunnel whose other end is the source's dump, and its page server. */
  pageTunnel?: PageTunnelReceiver;
  /** Post-copy: where the lazy pages are asked for, and the key their replies are sealed with. */
  transferId: string;
  pagesKey: Buffer | null;
  /** Opens the page-server client keys of this migration (pageServerTlsKey of its image key). */
  tlsKey: Buffer | null;
  /** Post-copy, during the restore and until the last page: the page server CRIU's lazy-pages daemon asks. */
  relay?: PageServerSession;
  /** The workload's local dirs as the coordinator gave them, and what extracts their archives. */
  localDirs: string[];
  local?: LocalDirReceiver;
}

export interface MigrationTargetOptions {
  /** This host's name (for messages). */
  host: string;
  /** This host's registered address: where the source reaches it, and where service addresses go. */
  address: string;
  /** Largest image this host accepts. */
  maxImageBytes: number;
  /** This agent's data dir (workload logs), against which a manifest's log path is checked. */
  dataDir: string;
  /** Where workloads' local dirs may be (host/local-dirs.ts); default DEFAULT_LOCAL_DIR_ROOTS. */
  localDirRoots?: string[];
  /** Where isolated workloads' root skeletons live on this host (isolated-root.ts). */
  rootsDir: string;
}

export class MigrationTarget {
  private readonly incoming = new Map<string, IncomingMigration>();
  /** Migrations whose CRIU restore runs now (a coordinator reconciling must wait for its end). */
  private readonly restoring = new Set<string>();
  /** One CRIU restore at a time on this host (see serial-lock.ts). */
  private readonly restoreLock = new SerialLock();

  constructor(
    private readonly opts: MigrationTargetOptions,
    private readonly deps: MigrationDeps,
  ) {}

  /** receiving / restoring / neither, for the coordinator's reconciliation. */
  inProgress(migrationId: string): MigrationRecordReply['inProgress'] {
    return this.restoring.has(migrationId) ? 'restoring' : this.incoming.has(migrationId) ? 'receiving' : null;
  }

  /** `imageKey`: the migration's key, opened from the request's sealed copy. */
  async receive(req: ReceiveRequest, imageKey: Buffer | null): Promise<ReceiveReply> {
    const { workloads, workDirs, nc, log } = this.deps;
    if (this.incoming.has(req.migrationId)) throw new FerryError(ErrorCode.CONFLICT, `migration ${req.migrationId} is already being received`);
    const existing = workloads.inventory.get(req.workload);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `a workload named ${req.workload} already runs on ${this.opts.host}`);
    }
    // Before the source freezes anything: local dirs this host will not take, or a filesystem it
    // cannot mount, fail the migration here.
    checkLocalDirs(req.localDirs, this.opts.localDirRoots ?? DEFAULT_LOCAL_DIR_ROOTS);
    if (req.pageServerTls && !imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, "a page server over TLS needs the migration's image key: its client key crosses the bus sealed with it");
    await assertLocalDirsFree(req.localDirs);
    const mountedPaths = await workloads.mountAll(req.mounts);
    const local = req.localDirs.length > 0 ? new LocalDirReceiver(this.deps.syscalls, req.localDirs, log.child({ migrationId: req.migrationId })) : undefined;
    const dir = await workDirs.create(req.migrationId);
    const receiver = ImageReceiver.start(nc, req.transferId, dir, {
      idleTimeoutMs: req.idleTimeoutMs,
      ...(req.firstFrameTimeoutMs !== undefined ? { firstFrameTimeoutMs: req.firstFrameTimeoutMs } : {}),
      maxTotalBytes: this.opts.maxImageBytes,
      maxFileBytes: this.opts.maxImageBytes,
      // The address we registered with is the one the source agent can reach us on.
      directListenAddress: this.opts.address,
      imageKey,
      filePump: nativeFilePump(this.deps.syscalls),
      frameAead: aeadInPlace,
      // A local dir's full archive is extracted as soon as it is here, while the source dumps.
      // (Streamed on the pumped path, it goes straight into tar; else it lands here first.)
      ...(local ? { onFileReceived: (name: string, absolutePath: string) => local.onImageFile(name, absolutePath), openSink: (name: string) => local.openSink(name) } : {}),
      logger: log.child({ migrationId: req.migrationId }),
    });
    // Failures surface through restore() or discard(); keep an unobserved rejection from crashing us.
    receiver.done.then((stats) => this.deps.metrics?.received(stats.bytes)).catch(() => undefined);
    const progressTimer = setInterval(() => {
      const p = receiver.progress();
      nc.publish(subjects.progress(this.opts.host), encode({ v: PROTOCOL_VERSION, migrationId: req.migrationId, bytes: p.bytes, files: p.files }));
    }, PROGRESS_INTERVAL_MS);
    receiver.done.finally(() => clearInterval(progressTimer)).catch(() => undefined);
    const incoming: IncomingMigration = {
      migrationId: req.migrationId,
      workload: req.workload,
      dir,
      receiver,
      progressTimer,
      mountedPaths,
      mountRoots: req.mounts.map((m) => m.path),
      mounts: req.mounts,
      ...(req.address ? { address: req.address } : {}),
      transferId: req.transferId,
      pagesKey: imageKey ? pageRequestKey(imageKey) : null,
      tlsKey: imageKey ? pageServerTlsKey(imageKey) : null,
      localDirs: req.localDirs,
      ...(local ? { local } : {}),
    };
    this.incoming.set(req.migrationId, incoming);
    // The source starts sending as soon as we reply; the server must have our subscription first.
    await receiver.ready();
    let clientTls: PageServerClientTls | undefined;
    if (req.pageServer) {
      let serverTls: PageServerTlsFiles | undefined;
      if (req.pageServerTls) {
        const made = await makePageServerTls(workDirs.tlsPathFor(req.migrationId), this.opts.address);
        serverTls = made.server;
        clientTls = made.client;
      }
      incoming.pageServer = await PageServer.start(this.deps.criu, dir, this.opts.address, log.child({ migrationId: req.migrationId }), serverTls);
    }
    log.info({ migrationId: req.migrationId, source: req.source, pageServer: req.pageServer, pageServerTls: clientTls !== undefined, pageTunnel: req.pageTunnel }, 'receiving image');
    if (req.pageTunnel) {
      if (!imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'the page tunnel needs the migration\'s image key (its keys derive from it)');
      const tunnelLog = log.child({ migrationId: req.migrationId });
      const tunnel = req.lazyPageTunnel
        ? await PageTunnelReceiver.forLazyPages(this.deps.syscalls, this.opts.address, imageKey, tunnelLog)
        : await PageTunnelReceiver.forPageServer(this.deps.syscalls, this.deps.criu, dir, this.opts.address, imageKey, tunnelLog);
      incoming.pageTunnel = tunnel;
      // Pre-copy: its page server is the one the restore waits for and counts the pages of.
      incoming.pageServer = tunnel.pageServer;
      return { pageTunnel: tunnel.endpoint };
    }
    const ps = incoming.pageServer;
    // The client key goes out sealed: the coordinator relays it to the source without being able to use it.
    const sealedTls = clientTls && incoming.tlsKey ? { tls: sealPageServerTls(clientTls, incoming.tlsKey, req.migrationId) } : {};
    return ps ? { pageServer: { address: ps.address, port: ps.port, ...sealedTls } } : {};
  }

  /** The source's lazy page server with its client key opened (it came sealed with this migration's key). */
  private openLazyPageServer(ps: PageServerEndpoint, inc: IncomingMigration): OpenedPageServerEndpoint {
    if (!ps.tls) return { address: ps.address, port: ps.port };
    if (!inc.tlsKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, "the source's page server credentials came without this migration's image key to open them");
    return { address: ps.address, port: ps.port, tls: openPageServerTls(ps.tls, inc.tlsKey, inc.migrationId) };
  }

  async restore(req: RestoreRequest): Promise<RestoreReply> {
    const { criu, workloads, workDirs, log, metrics } = this.deps;
    const inc = this.incoming.get(req.migrationId);
    if (!inc) throw new FerryError(ErrorCode.NOT_FOUND, `no image received for migration ${req.migrationId}`);
    if (inc.workload !== req.workload) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `migration ${req.migrationId} carries ${inc.workload}, not ${req.workload}`);
    await inc.receiver.done.catch((err) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `image for ${req.workload} incomplete: ${toFerryError(err).message}`, { cause: err });
    });
    // The page server exits 0 only once the dump sent every page; behind the page tunnel, the
    // tunnel must also have ended with its authenticated end frames (done() waits for both).
    const pagesIn = inc.pageTunnel?.pageServer ? inc.pageTunnel.done() : inc.pageServer?.done;
    await pagesIn?.catch((err) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `memory pages for ${req.workload} incomplete: ${toFerryError(err).message}`, { cause: err });
    });
    const manifest = await readManifest(inc.dir, req.workload);
    // Nothing of it is acted on before it matches what this host derives itself.
    checkManifestForTarget(manifest, { migrationId: req.migrationId, dataDir: this.opts.dataDir, mountRoots: inc.mountRoots, address: inc.address });
    // So are its pagemaps: CRIU would walk a hostile run of 2^40 pages for days, holding every restore here.
    await checkClaimedMemory(inc.dir, await readdir(inc.dir), totalmem());
    // Pre-copied memory: each pages image that came as a delta is rebuilt before anything reads it.
    const deltas = await applyPageDeltas(inc.dir, this.opts.maxImageBytes, { lazy: req.mode === 'lazy' });
    if (deltas.deltas > 0) {
      const { lazyPagesSource: _, ...counts } = deltas;
      log.info({ migrationId: req.migrationId, ...counts }, 'memory rebuilt from the pre-copy and its delta');
    }
    await placeWorkloadLog(inc.dir, manifest);
    // Its local dirs as they were when it froze, before it runs here (a failure rolls back).
    await inc.local?.beforeRestore(inc.dir);
    const started = Date.now();
    this.restoring.add(req.migrationId);
    const sys = this.deps.syscalls;
    const inherited = openPins(manifest.pins, (fd, pos) => sys.lseek(fd, pos, SEEK_SET));
    const migrationLog = log.child({ migrationId: req.migrationId });
    // Its own root is rebuilt from this host's own plan (isolated-root.ts), with the cluster
    // filesystems the coordinator gave (never the image's list); the image's mounts map only onto
    // the paths this host chose.
    const isolatedRoot = hasOwnRoot(manifest)
      ? await isolatedRootPlan(workloadRootDir(this.opts.rootsDir, manifest.name), manifest.logPath, { mounts: inc.mounts.map((m) => m.path), userNamespace: manifest.user !== undefined })
      : undefined;
    // A --user workload with an address comes with a network namespace of its own (workload-network.ts).
    const link = manifest.user && manifest.address ? linkOf(manifest) : undefined;
    let restored: Awaited<ReturnType<CriuDriver['restore']>>;
    let feed: LazyMemoryFeed | undefined;
    try {
      if (isolatedRoot) await makeRootSkeleton(isolatedRoot);
      // Its connections are bound to the service address: it must be here before CRIU repairs them
      // (in a network namespace of its own, the restore brings it; the host side follows, below).
      if (manifest.address && !link) await addServiceAddress(manifest.address, this.opts.address);
      if (req.mode === 'post-copy' && inc.pageTunnel) {
        // The lazy memory is in the source's lazy dump: our daemon asks it through the page tunnel.
        feed = await startTunnelledPostCopyMemory(criu, inc.dir, inc.pageTunnel.takeLazyPagesEnd(), this.deps.syscalls, migrationLog);
        inc.relay = feed.relay;
      } else if (req.mode === 'post-copy') {
        feed = await startPostCopyMemory(
          criu,
          inc.dir,
          {
            nc: this.deps.nc,
            transferId: inc.transferId,
            pagesKey: inc.pagesKey,
            ...(req.lazyPageServer ? { lazyPageServer: this.openLazyPageServer(req.lazyPageServer, inc) } : {}),
            tlsDir: workDirs.tlsPathFor(req.migrationId),
            syscalls: this.deps.syscalls,
          },
          migrationLog,
        );
        inc.relay = feed.relay;
      } else if (req.mode === 'lazy' && deltas.lazyPagesSource) {
        // Pre-copied memory: the daemon's lazy pages come from this host's files, sent natively.
        feed = await startLocalServedMemory(criu, inc.dir, deltas.lazyPagesSource, this.deps.syscalls, migrationLog);
        inc.relay = feed.relay;
      } else if (req.mode === 'lazy') feed = await startLocalLazyMemory(criu, inc.dir);
      const lazy = feed !== undefined;
      restored = await this.restoreLock.run(() =>
        criu.restore({
          imagesDir: inc.dir,
          pidFile: join(inc.dir, 'restored.pid'),
          inheritFds: inherited,
          tcpEstablished: connectionsMove(manifest),
          extraArgs: [
            ...(lazy ? ['--lazy-pages'] : []),
            ...(isolatedRoot ? criuRestoreRootArgs(isolatedRoot) : []),
            ...(manifest.user && !link ? ISOLATED_ROOT_TCP_ARGS : []),
            // The link's host end gets this host's name for it (workload-network.ts).
            ...(link ? criuRestoreLinkArgs(manifest.name) : []),
          ],
        }),
      );
      // Its link is back (CRIU made the pair): this host's side of it, so the address is reached.
      // Failing that, the copy just restored must not run on beside the source's: killed silently.
      if (manifest.address && link) {
        await addServiceAddress(manifest.address, this.opts.address, link).catch(async (err: unknown) => {
          await setTreeTcpRepair(this.deps.syscalls, await listTree(restored.pid), true).catch(() => 0);
          await criu.kill(restored.pid).catch(() => undefined);
          throw err;
        });
      }
    } catch (err) {
      if (isolatedRoot) await removeRootSkeleton(isolatedRoot.rootDir);
      feed?.daemon.stop();
      inc.relay?.stop('the restore failed');
      if (manifest.address) await removeServiceAddress(manifest.address, this.opts.address, link).catch(() => undefined);
      throw err;
    } finally {
      this.restoring.delete(req.migrationId);
      closeInherited(inherited);
    }
    const resumedAt = Date.now();
    // Running: from now on the memory is pulled ahead of its faults (not before, to leave the CPU to the restore).
    feed?.prefetch?.start();
    metrics?.restored(resumedAt - started);
    // CRIU unlocked the connections at the end of the restore; the peers learn the new MAC now.
    if (manifest.address) {
      await announceServiceAddress(manifest.address, this.opts.address, link).catch((err) =>
        migrationLog.warn({ err: toFerryError(err).message }, 'gratuitous ARP failed; peers re-learn the address when their ARP entry expires'),
      );
    }
    // The restored workload holds its own copies of the pinned files now; the names can go.
    await removePins(manifest.pins);
    await workloads.inventory.put({
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
      mounts: inc.mounts,
      ...(manifest.address ? { address: manifest.address } : {}),
      ...(inc.localDirs.length > 0 ? { localDirs: inc.localDirs } : {}),
      ...(manifest.user ? { user: manifest.user } : {}),
      ...(isolatedRoot ? { ownRoot: true } : {}),
      ...(link ? { ownNetwork: true } : {}),
    });
    if (feed) await this.awaitLastPage(feed, inc, restored.pid, req.workload);
    // Pages that came after the resume: counted by the relay, or (CRIU fetching them itself) every
    // lazy page the images name, all of which CRIU's daemon had before it exited 0.
    const fetched = inc.relay && req.mode === 'post-copy'
      ? (await inc.relay.done).pages * PAGE_BYTES
      : req.mode === 'post-copy' && (req.lazyPageServer || inc.pageTunnel)
        ? lazyRunBytes(await lazyRunsOf(inc.dir, await readdir(inc.dir)))
        : 0;
    migrationLog.info({ workload: req.workload, pid: restored.pid, ms: resumedAt - started, mode: req.mode }, 'workload restored');
    const pageBytes = inc.pageServer ? await sumPageImageBytes(inc.dir) : fetched;
    // The memory pages came by the page server, not the stream: they count as received all the same.
    if (pageBytes > 0) metrics?.received(pageBytes);
    return { pid: restored.pid, restoreMs: resumedAt - started, resumedAt, pageBytes, pullMs: feed ? Date.now() - resumedAt : 0 };
  }

  /**
   * A lazy restore runs already, but is not confirmed before every page is in: until then the
   * source keeps its frozen copy, and a failure here rolls back (discard kills this copy, the
   * source thaws). Post-copy: the relay's error says why (the source's answer), CRIU's only that it gave up.
   */
  private async awaitLastPage(feed: LazyMemoryFeed, inc: IncomingMigration, pid: number, workload: string): Promise<void> {
    // Through the page tunnel, its end frames both ways say the session closed as CRIU meant it to; a relay, that the daemon's close was answered.
    const filled = Promise.all([feed.daemon.done, inc.relay?.done, inc.pageTunnel?.done()]);
    await filled.catch(async (err) => {
      // This copy dies before its daemon: nothing of it may run once the source may thaw.
      await this.deps.criu.kill(pid).catch(() => undefined);
      feed.daemon.stop();
      const why = inc.relay ? await inc.relay.done.then(() => err, (relayErr: unknown) => relayErr) : err;
      inc.relay?.stop('the lazy restore failed');
      throw new FerryError(ErrorCode.RESTORE_FAILED, `lazy restore of ${workload} could not fill its memory: ${toFerryError(why).message}`, { cause: why });
    });
  }

  /** The coordinator confirmed the whole migration: the restored copy is ours for good. */
  async settle(req: MigrationRef): Promise<void> {
    const { workloads, workDirs } = this.deps;
    const rec = workloads.inventory.get(req.workload);
    if (rec?.migration?.id === req.migrationId) {
      rec.migration = null;
      await workloads.inventory.put(rec);
    }
    const inc = this.incoming.get(req.migrationId);
    if (inc) {
      clearInterval(inc.progressTimer);
      this.incoming.delete(req.migrationId);
    }
    await workDirs.remove(req.migrationId);
  }

  async discard(req: MigrationRef): Promise<void> {
    const { workloads, workDirs, criu, log } = this.deps;
    const inc = this.incoming.get(req.migrationId);
    if (inc) {
      this.stopIncoming(inc, 'migration rolled back');
      this.incoming.delete(req.migrationId);
    }
    const rec = workloads.inventory.get(req.workload);
    const manifest = await manifestIn(workDirs.pathFor(req.migrationId));
    // Never from the image: the target removes only an address it was told the workload has.
    const address = rec?.address ?? inc?.address;
    if (rec?.migration?.id === req.migrationId && rec.migration.role === 'target') {
      if (await isAlive(rec.pid, rec.startTime)) {
        // The source keeps these connections: closing ours must not reset them, so in repair mode first (silent close).
        if (rec.address) await setTreeTcpRepair(this.deps.syscalls, await listTree(rec.pid), true);
        await criu.kill(rec.pid);
      }
      await workloads.inventory.remove(req.workload);
      if (hasOwnRoot(rec)) await removeRootSkeleton(workloadRootDir(this.opts.rootsDir, rec.name));
      log.warn({ migrationId: req.migrationId, workload: req.workload }, 'discarded restored copy');
    }
    // The address goes back with the workload to the source (which announces it).
    if (address && !workloads.inventory.all().some((w) => w.address === address)) {
      await removeServiceAddress(address, this.opts.address, linkOf({ name: req.workload, ownNetwork: manifest?.ownNetwork }));
    }
    // Only pins that can be this migration's (the source removes its pins itself at resume).
    const pins = (manifest.pins ?? []).filter((p) => inc !== undefined && pinProblem(p, { migrationId: req.migrationId, mountRoots: inc.mountRoots }) === null);
    await removePins(pins);
    // What this migration extracted into local dirs goes with it; the source kept its own.
    await inc?.local?.discard();
    await workDirs.remove(req.migrationId);
    if (inc) await workloads.unmountUnused(inc.mountedPaths);
  }

  /** At agent shutdown: every transfer in progress ends. */
  close(): void {
    for (const inc of this.incoming.values()) this.stopIncoming(inc, 'agent shutting down');
  }

  private stopIncoming(inc: IncomingMigration, why: string): void {
    clearInterval(inc.progressTimer);
    inc.receiver.abort(why);
    inc.pageTunnel?.stop();
    inc.pageServer?.stop();
    inc.relay?.stop(why);
  }
}
