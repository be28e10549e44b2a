/**
 * The source half of a migration: checks the workload can move, freezes and dumps it through the
 * data path the coordinator chose, streams the image, and then, on the coordinator's word only,
 * kills the frozen copy (release) or thaws it (resume). It never decides a migration's fate.
 */
import { readFile } from 'node:fs/promises';
import {
  ErrorCode,
  FerryError,
  toFerryError,
  type CheckpointReply,
  type CheckpointRequest,
  type FileIdentity,
  type Logger,
  type MigrationRef,
  type PageServerEndpoint,
} from '@ferry/protocol';
import { aeadInPlace } from '@ferry/native';
import { sendImage, type LiveImageFile, type TransferStats } from '@ferry/transfer';
import { compromiseImage, type AgentFaults } from '../fault-injection';
import { isAlive, listTree, livingProcesses } from '../host/process-tree';
import { listLocalFiles, type FileDigests } from '../host/local-files';
import { addServiceAddress, announceServiceAddress, hostAddresses, ipOf, removeServiceAddress } from '../host/service-address';
import { criuLockTableFromDumpLog, dropCriuNetworkLock, inetSocketsOf, setTreeTcpRepair, unmigratableSockets } from '../host/tcp-sockets';
import { locksHeld } from '../host/file-locks';
import { inLocalDir } from '../host/local-dirs';
import { criuDumpExternals, ISOLATED_ROOT_OWN_MOUNTS, ISOLATED_ROOT_TCP_DUMP_ARGS, isolatedRootPlan, removeRootSkeleton, rootBindDirs } from '../host/isolated-root';
import { fifosOutside, pipesWithData } from '../host/pipe-data';
import { armedPeriodicTimers } from '../host/timerfds';
import { pinnedThreads } from '../host/cpu-affinity';
import { checkGhostLimit, findUnlinkedFiles, pinSharedFiles, removePins, type UnlinkedFile } from '../host/unlinked-files';
import type { PostCopySource } from '../post-copy/post-copy-source';
import { connectionsMove, hasOwnRoot, linkOf, type WorkloadRecord } from '../workloads/inventory';
import { GATEWAY_IP } from '../host/workload-network';
import { workloadRootDir } from '../workloads/workloads';
import { manifestIn, writeManifest } from './manifest-file';
import { concatLive, LocalDirSender, removeLocalDirs } from './local-dir-copy';
import { MemoryPrecopy } from './memory-precopy';
import { nativeFilePump } from './native-file-pump';
import type { MigrationDeps } from './migration-deps';
import { SerialLock } from './serial-lock';
import { sourceDataPath, type DumpedImage } from './source-data-paths';

export interface MigrationSourceOptions {
  /** This host's registered address (service addresses live on its interface). */
  address: string;
  /** Largest unlinked-but-open local file the image may carry. */
  ghostLimitBytes: number;
  /** Memory pre-copy only for a workload with at least this much private memory (AgentOptions.precopyMinBytes). */
  precopyMinBytes: number;
  /** Largest image: a workload with more private memory than this is not pre-copied. */
  maxImageBytes: number;
  /** Where isolated workloads' root skeletons live on this host (isolated-root.ts). */
  rootsDir: string;
  /** Failure tests only: the image sent as a compromised source would (fault-injection.ts). */
  faults?: AgentFaults;
}

export class MigrationSource {
  /** Checkpoints running now: a rollback's resume waits for the dump/send to end before thawing. */
  private readonly checkpoints = new Map<string, Promise<CheckpointReply>>();
  /** Post-copy: lazy memory kept for the target until release or rollback. */
  private readonly lazySources = new Map<string, PostCopySource>();
  /** One CRIU dump at a time on this host (see serial-lock.ts). */
  private readonly dumpLock = new SerialLock();

  constructor(
    private readonly opts: MigrationSourceOptions,
    private readonly deps: MigrationDeps,
  ) {}

  /** `imageKey`: the migration's key, opened from the request's sealed copy. */
  async checkpoint(req: CheckpointRequest, imageKey: Buffer | null): Promise<CheckpointReply> {
    const running = this.checkpointNow(req, imageKey);
    this.checkpoints.set(req.migrationId, running);
    try {
      return await running;
    } finally {
      this.checkpoints.delete(req.migrationId);
    }
  }

  /**
   * What must hold before a workload is frozen, else FAILED_PRECONDITION: its unlinked-but-open
   * local files fit the ghost limit (shared ones are pinned and travel by name), every inet
   * socket can move (tcp-sockets.ts), every file lock is on a file in its local dirs (file-locks.ts), and, where the target's CRIU cannot refill pipes
   * (`targetPipeData` false, from its probe), no pipe or FIFO holds unread data (pipe-data.ts), and no
   * periodic timerfd is armed (CRIU would restore it disarmed, timerfds.ts), nor a FIFO outside its
   * local dirs holds unread data (pipe-data.ts), nor a thread is pinned to CPUs (CRIU drops affinity, cpu-affinity.ts).
   * Returns the unlinked files found, for the pins.
   */
  async assertMigratable(rec: WorkloadRecord, { targetPipeData = true } = {}): Promise<UnlinkedFile[]> {
    // Zombies hold nothing to check (process-tree.ts); CRIU moves them as they are.
    const tree = await livingProcesses(await listTree(rec.pid));
    const unlinked = await findUnlinkedFiles(tree);
    checkGhostLimit(unlinked, this.opts.ghostLimitBytes);
    // A pinned file is handed to CRIU's restore opened on the target's own mount of the cluster
    // filesystem (--inherit-fd), which a workload with its own root does not have in its namespace:
    // it would run, but its next dump could not place the file ("Can't lookup mount").
    const pinnable = unlinked.filter((f) => f.shared);
    if (pinnable.length > 0 && hasOwnRoot(rec)) {
      const named = pinnable.slice(0, 5).map((f) => `${f.path} (pid ${f.pid})`);
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `workload ${rec.name} holds unlinked-but-open files on a cluster filesystem: ${named.join('; ')}. They move by name only for a workload in the host's mount namespace ` +
          '(the target reopens them on its own mount, outside a root of the workload\'s own); close them before migrating, or run the workload with `ferry run --host-root`',
        { details: named },
      );
    }
    const pipes = await pipesWithData(tree, this.deps.syscalls);
    if (!targetPipeData) {
      if (pipes.length > 0) {
        const named = pipes.slice(0, 5).map((p) => `${p.name} (pid ${p.pid} fd ${p.fd}, ${p.unreadBytes} bytes)`);
        throw new FerryError(
          ErrorCode.FAILED_PRECONDITION,
          `workload ${rec.name} has unread data in pipes or FIFOs, which the target's CRIU cannot refill on its kernel (its probe: pipe data did not survive a dump and restore): ` +
            `${named.join('; ')}; let the workload drain them, or move it to a host whose probe reports pipeData`,
          { details: named },
        );
      }
    }
    // A FIFO's bytes go into the node at its path on the target: only a local dir's is the target's own (host/pipe-data.ts).
    const strayFifos = fifosOutside(pipes, (path) => inLocalDir(path, rec.localDirs ?? []));
    if (strayFifos.length > 0) {
      const named = strayFifos.slice(0, 5).map((p) => `${p.name} (pid ${p.pid} fd ${p.fd}, ${p.unreadBytes} bytes)`);
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `workload ${rec.name} has a FIFO holding unread data outside its local dirs: ${named.join('; ')}. The restore refills the FIFO at that path on the target, ` +
          'which is another host\'s FIFO or, where the hosts share the filesystem, the same FIFO the frozen copy here still holds (its bytes would be there twice); ' +
          'make FIFOs in a directory declared with `ferry run --local-dir` (they then move with it), or let the workload drain them',
        { details: named },
      );
    }
    // A lock moves only with a file that moves: its local dirs (host/file-locks.ts).
    const stuckLocks = (await locksHeld(tree)).filter((l) => !inLocalDir(l.path, rec.localDirs ?? []));
    if (stuckLocks.length > 0) {
      const named = stuckLocks.slice(0, 5).map((l) => `${l.kind} lock on ${l.path} (pid ${l.pid} fd ${l.fd})`);
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `workload ${rec.name} holds file locks outside its local dirs: ${named.join('; ')}. Until the target confirms, the frozen copy here keeps them, ` +
          'so a target seeing the same file could not take them again; keep lock files in a directory declared with `ferry run --local-dir` (they then move with it), or release the locks',
        { details: named },
      );
    }
    // CRIU 4.2.1 restores a periodic timerfd that fired while frozen disarmed (host/timerfds.ts).
    const timers = await armedPeriodicTimers(tree);
    if (timers.length > 0) {
      const named = timers.slice(0, 5).map((t) => `timerfd every ${Number(t.intervalNs) / 1e6} ms (pid ${t.pid} fd ${t.fd})`);
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `workload ${rec.name} holds an armed periodic timerfd: ${named.join('; ')}. CRIU 4.2.1 restores such a timer disarmed when it fired while the workload was frozen ` +
          '(checkpoint-restore/criu#3162: the timer would fire once after the move and never again); disarm it (or use a one-shot timer re-armed on each expiry) before migrating',
        { details: named },
      );
    }
    // CRIU 4.2.1 does not restore CPU affinity (host/cpu-affinity.ts).
    const pinned = await pinnedThreads(tree);
    if (pinned.length > 0) {
      const named = pinned.slice(0, 5).map((t) => `pid ${t.pid} thread ${t.tid} on CPUs ${t.allowed}`);
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `workload ${rec.name} has threads pinned to CPUs (sched_setaffinity): ${named.join('; ')}. CRIU 4.2.1 does not restore CPU affinity, ` +
          'so after the move they would run on every CPU without knowing; unpin them (the affinity can be set again after the move) before migrating',
        { details: named },
      );
    }
    const serviceIp = rec.address ? ipOf(rec.address) : null;
    const sockets = await inetSocketsOf(tree);
    // In a network namespace of its own, the host reaches it from the gateway address (workload-network.ts): a peer staying here too.
    const otherHostIps = new Set([...(await hostAddresses()).map((a) => a.ip).filter((ip) => ip !== serviceIp), ...(rec.ownNetwork ? [GATEWAY_IP] : [])]);
    const socketProblems = unmigratableSockets(sockets, serviceIp, otherHostIps);
    if (socketProblems.length > 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${rec.name} holds sockets that cannot migrate: ${socketProblems.slice(0, 5).join('; ')}`, { details: socketProblems });
    }
    // Its own root: every mount of its namespace must be one of ferry's own (isolated-root.ts).
    await this.isolatedRootExternals(rec);
    return unlinked;
  }

  /**
   * CRIU's `--external mnt[...]` arguments for a workload with its own root: its root's bind
   * mounts, which the target binds from its own paths; FAILED_PRECONDITION for a mount the
   * workload made itself. None for a workload in the host's mount namespace (`--host-root`).
   * A workload run as another user in the host's network namespace has its connections closed
   * (ISOLATED_ROOT_TCP_DUMP_ARGS; none can be on a service address: workload-network.ts).
   */
  private async isolatedRootExternals(rec: WorkloadRecord): Promise<string[]> {
    if (!hasOwnRoot(rec)) return [];
    const plan = await isolatedRootPlan(workloadRootDir(this.opts.rootsDir, rec.name), rec.logPath, { mounts: (rec.mounts ?? []).map((m) => m.path), userNamespace: rec.user !== undefined });
    return [...criuDumpExternals(await readFile(`/proc/${rec.pid}/mountinfo`, 'utf8'), plan), ...(rec.user && !rec.ownNetwork ? ISOLATED_ROOT_TCP_DUMP_ARGS : [])];
  }

  /**
   * Pre-flight, beside assertMigratable: the regular files the workload holds open on this host's
   * own disks (host/local-files.ts), with their identity, for the target to compare (`check-files`).
   * Not part of the checkpoint: it hashes files, and the pre-flight already decided.
   */
  async localFiles(rec: WorkloadRecord, digests: FileDigests): Promise<FileIdentity[]> {
    const scope = { mounts: (rec.mounts ?? []).map((m) => m.path), localDirs: rec.localDirs ?? [], ownFiles: [rec.logPath], ownMounts: hasOwnRoot(rec) ? ISOLATED_ROOT_OWN_MOUNTS : [] };
    return listLocalFiles(await livingProcesses(await listTree(rec.pid)), scope, { digests });
  }

  /**
   * Pre-flight: the host directories the workload's own root binds (its top-level ones; its cluster
   * filesystems the target mounts itself), for the target to check it has each. None for `--host-root`.
   */
  async rootDirs(rec: WorkloadRecord): Promise<string[]> {
    if (!hasOwnRoot(rec)) return [];
    return rootBindDirs(await readFile(`/proc/${rec.pid}/mountinfo`, 'utf8'), (rec.mounts ?? []).map((m) => m.path));
  }

  private async checkpointNow(req: CheckpointRequest, imageKey: Buffer | null): Promise<CheckpointReply> {
    const { workloads, workDirs, criu, metrics } = this.deps;
    const rec = workloads.require(req.workload);
    if (rec.state !== 'running' || !(await isAlive(rec.pid, rec.startTime))) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${req.workload} is not running (${rec.state})`);
    }
    if (rec.migration) throw new FerryError(ErrorCode.CONFLICT, `workload ${req.workload} is already in migration ${rec.migration.id}`);
    // Checked in the pre-flight already, and again here: the workload ran on since.
    const unlinked = await this.assertMigratable(rec, { targetPipeData: req.targetPipeData });
    const isolatedExternals = await this.isolatedRootExternals(rec);
    const pins = await pinSharedFiles(unlinked, req.migrationId);
    const dir = await workDirs.create(req.migrationId);
    const log = this.deps.log.child({ migrationId: req.migrationId });
    const startSend = (live?: AsyncIterable<LiveImageFile>) =>
      sendImage(this.deps.nc, req.transferId, dir, {
        idleTimeoutMs: req.idleTimeoutMs,
        transport: req.transport,
        imageKey,
        filePump: nativeFilePump(this.deps.syscalls),
        frameAead: aeadInPlace,
        logger: log,
        ...(live ? { live } : {}),
      });
    // Host-local dirs and memory: their first pass crosses while the workload still runs
    // (local-dir-copy.ts, memory-precopy.ts).
    const precopy = await this.firstPass(rec, req, dir, startSend, log).catch(async (err: unknown) => {
      await removePins(pins);
      await workDirs.remove(req.migrationId);
      throw err;
    });
    const path = sourceDataPath(
      req.memory,
      {
        ...this.deps,
        hostAddress: this.opts.address,
        migrationId: req.migrationId,
        transferId: req.transferId,
        imageKey,
        dir,
        log,
        stream: req.transport,
        sendImage: precopy?.sendImage ?? startSend,
        ...(precopy?.memory ? { memoryPrecopy: precopy.memory } : {}),
      },
      req.pageServer,
      req.pageTunnel,
    );
    // Recorded before freezing: if we crash while it is frozen, the next start knows to ask.
    rec.migration = { id: req.migrationId, role: 'source' };
    rec.state = 'frozen';
    await workloads.inventory.put(rec);
    let frozenAt = Date.now();
    let dumped: DumpedImage;
    try {
      dumped = await this.dumpLock.run(async () => {
        // Downtime starts when CRIU freezes the tree, not while waiting for another dump.
        frozenAt = Date.now();
        return path.dump({
          pid: rec.pid,
          imagesDir: dir,
          leaveStopped: true,
          externalFiles: pins.map((p) => p.key),
          // Its connections are dumped in TCP repair mode and stay locked (nftables) while it is frozen
          // (not those of a --user workload in the host's network namespace: isolated-root.ts).
          tcpEstablished: connectionsMove(rec),
          // Its own root's bind mounts are external: the target binds its own paths (isolated-root.ts).
          extraArgs: isolatedExternals,
        });
      });
      if (rec.address) {
        // The address follows the workload: off this host now, on the target before its restore.
        const lockTable = criuLockTableFromDumpLog(await readFile(dumped.logPath, 'utf8').catch(() => ''));
        rec.migration = { id: req.migrationId, role: 'source', ...(lockTable ? { lockTable } : {}) };
        await workloads.inventory.put(rec);
        await removeServiceAddress(rec.address, this.opts.address, linkOf(rec));
      }
      metrics?.dumped(dumped.durationMs);
    } catch (err) {
      path.abort();
      precopy?.abort(toFerryError(err, ErrorCode.CHECKPOINT_FAILED));
      // A dump that succeeded left connections locked in repair mode (moving the address failed after it): undo that first.
      if (rec.migration?.lockTable) await this.reviveNetwork(rec).catch((e) => log.error({ err: toFerryError(e).message }, 'could not revive the connections'));
      // CRIU resumes the tree itself when a dump fails; make sure of it and forget the mark.
      await criu.thaw(rec.pid).catch(() => undefined);
      await removePins(pins);
      rec.migration = null;
      rec.state = (await isAlive(rec.pid, rec.startTime)) ? 'running' : 'exited';
      await workloads.inventory.put(rec);
      await workDirs.remove(req.migrationId);
      throw err;
    }
    // From here the tree stays frozen on any failure: the coordinator's rollback (resume) thaws it.
    let lazyPageServer: PageServerEndpoint | undefined;
    let lazyBytes = 0;
    let sent: Awaited<ReturnType<typeof sendImage>>;
    try {
      await writeManifest(dir, rec, pins);
      const kept = await path.keepLazyMemory();
      if (kept) {
        // Kept until release or rollback, which close it.
        this.lazySources.set(req.migrationId, kept);
        lazyBytes = kept.lazyBytes;
      }
      const undoFaults = this.opts.faults ? await compromiseImage(dir, rec.name, this.opts.faults) : undefined;
      try {
        sent = await path.send();
      } finally {
        await undoFaults?.();
      }
      const after = await path.afterSend(sent);
      lazyPageServer = after.lazyPageServer;
      if (after.source) this.lazySources.set(req.migrationId, after.source);
    } catch (err) {
      // Whatever serves the kept memory goes now; the tree stays stopped for the rollback to thaw.
      path.abort();
      precopy?.abort(toFerryError(err, ErrorCode.TRANSFER_FAILED));
      throw err;
    }
    const wireBytes = dumped.bytesOnWire;
    metrics?.sent(sent.bytes + wireBytes, sent.elapsedMs + (wireBytes > 0 ? dumped.durationMs : 0));
    log.info({ bytes: sent.bytes, dumpMs: dumped.durationMs, transferMs: sent.elapsedMs, transport: sent.transport, memory: req.memory }, 'image sent');
    return {
      dumpMs: Math.round(dumped.durationMs),
      transferMs: Math.round(sent.elapsedMs),
      // With a page server the memory left during the dump, by CRIU's connection: part of what this migration moved.
      bytes: sent.bytes + wireBytes,
      files: sent.files,
      frozenAt,
      transport: path.transportName ?? sent.transport,
      lazyBytes,
      ...(lazyPageServer ? { lazyPageServer } : {}),
      localDirMs: precopy?.localDirMs() ?? 0,
      precopyMs: precopy?.memory?.milliseconds ?? 0,
      precopyBytes: precopy?.memory?.bytes ?? 0,
    };
  }

  /**
   * With local dirs or memory to pre-copy, the image stream starts now, the workload running: the
   * local dirs' full archives and the pre-copied memory go first, then (once the data path asks for
   * the stream, with its live files if it has any) the rest of the checkpoint, then the incremental
   * archives the frozen workload's dirs give. Resolves once the first pass is across (or, where the
   * stream is not pumped, written here to be sent after the dump).
   */
  private async firstPass(
    rec: WorkloadRecord,
    req: CheckpointRequest,
    dir: string,
    startSend: (live?: AsyncIterable<LiveImageFile>) => Promise<TransferStats>,
    log: Logger,
  ): Promise<{ sendImage: (live?: AsyncIterable<LiveImageFile>) => Promise<TransferStats>; abort: (err: FerryError) => void; localDirMs: () => number; memory?: MemoryPrecopy } | undefined> {
    const dirs = rec.localDirs ?? [];
    const local = dirs.length > 0 ? new LocalDirSender(this.deps.syscalls, dirs, this.deps.workDirs.localPathFor(req.migrationId), log) : undefined;
    // Memory only where the coordinator planned it (both hosts able, the streamed dump) and the workload is big enough.
    const memory =
      req.precopyMemory && req.memory === 'stream'
        ? await MemoryPrecopy.plan(this.deps.syscalls, await livingProcesses(await listTree(rec.pid)), { minBytes: this.opts.precopyMinBytes, maxBytes: this.opts.maxImageBytes }, log)
        : undefined;
    if (!local && !memory) return undefined;
    // The address runs each pre-copy file was read from: sent with the image, the target's parent pagemaps.
    await memory?.writeRuns(dir);
    const middle = new DeferredLive();
    const sending = startSend(concatLive(local ? local.fullArchives() : [], memory ? memory.files() : [], middle.files(), () => (local ? local.incrementalArchives() : [])));
    sending.catch(() => undefined);
    try {
      await Promise.race([
        Promise.all([local?.precopied, memory?.precopied]),
        sending.then(() => {
          throw new FerryError(ErrorCode.INTERNAL, 'the image stream ended before the first pass was across');
        }),
      ]);
    } catch (err) {
      // The stream failed during the first pass: its live source is told, so nothing waits on it.
      middle.fail(toFerryError(err, ErrorCode.TRANSFER_FAILED));
      throw err;
    }
    if (local) log.info({ dirs, ms: local.precopyMilliseconds }, 'local dirs pre-copied');
    if (memory) log.info({ bytes: memory.bytes, ms: memory.milliseconds }, 'memory pre-copy across');
    return {
      sendImage: (live) => {
        middle.resolve(live);
        return sending;
      },
      abort: (err) => middle.fail(err),
      localDirMs: () => local?.precopyMilliseconds ?? 0,
      ...(memory ? { memory } : {}),
    };
  }

  /** Target confirmed: the frozen copy must never run again. */
  async release(req: MigrationRef): Promise<void> {
    const { workloads, criu } = this.deps;
    const rec = workloads.inventory.get(req.workload);
    if (rec && rec.migration?.id === req.migrationId && rec.migration.role === 'source') {
      // Its sockets are still in repair mode, so this kill sends the peers nothing; then the lock can go.
      if (await isAlive(rec.pid, rec.startTime)) await criu.kill(rec.pid);
      await this.closeLazySource(req.migrationId);
      // (A namespace of its own went with the killed tree, its lock with it.)
      if (rec.migration.lockTable && !rec.ownNetwork) await dropCriuNetworkLock(rec.migration.lockTable);
      // Its local dirs live on the target now; here they go only after the target confirmed.
      await removeLocalDirs(rec.localDirs ?? []);
      // So does its root (the killed tree's mount namespace, which held it, is gone).
      if (hasOwnRoot(rec)) await removeRootSkeleton(workloadRootDir(this.opts.rootsDir, rec.name));
      await workloads.inventory.remove(req.workload);
      this.deps.log.info({ migrationId: req.migrationId, workload: req.workload }, 'released frozen copy');
      // The source copy is gone: its shared filesystems are unmounted unless another workload uses them.
      await workloads.unmountUnused((rec.mounts ?? []).map((m) => m.path));
    }
    await this.closeLazySource(req.migrationId);
    await this.cleanUp(req.migrationId);
  }

  /** Rollback: thaw the frozen copy so it carries on here. */
  async resume(req: MigrationRef): Promise<void> {
    // Thawing under a dump still writing would corrupt it; CRIU ends it soon once the target discards.
    await this.checkpoints.get(req.migrationId)?.catch(() => undefined);
    // A lazy dump holds the tree (ptrace) until its page session ends: only then can it thaw.
    await this.closeLazySource(req.migrationId);
    const { workloads, criu } = this.deps;
    const rec = workloads.inventory.get(req.workload);
    if (rec && rec.migration?.id === req.migrationId && rec.migration.role === 'source') {
      if (!(await isAlive(rec.pid, rec.startTime))) {
        throw new FerryError(ErrorCode.FAILED_PRECONDITION, `workload ${req.workload} died while frozen`);
      }
      if (rec.address) await this.reviveNetwork(rec);
      await criu.thaw(rec.pid);
      rec.migration = null;
      rec.state = 'running';
      await workloads.inventory.put(rec);
      this.deps.log.warn({ migrationId: req.migrationId, workload: req.workload }, 'thawed after rollback');
    }
    await this.cleanUp(req.migrationId);
  }

  /** The migration's pins and work dir go (the pins' names are listed in its manifest). */
  private async cleanUp(migrationId: string): Promise<void> {
    await removePins((await manifestIn(this.deps.workDirs.pathFor(migrationId))).pins ?? []);
    await this.deps.workDirs.remove(migrationId);
  }

  /** Post-copy: the target has every page (release) or gave up (rollback); nobody asks for more. */
  private async closeLazySource(migrationId: string): Promise<void> {
    const source = this.lazySources.get(migrationId);
    if (!source) return;
    this.lazySources.delete(migrationId);
    this.deps.log.info({ migrationId, bytesServed: source.bytesServed, lazyBytes: source.lazyBytes }, 'post-copy source closed');
    await source.close();
  }

  /**
   * Rollback of a workload with a service address, before the thaw: the address back on this
   * host (announced), its connections out of repair mode, CRIU's lock dropped. They carry on where
   * they were; the peers saw a pause.
   */
  private async reviveNetwork(rec: WorkloadRecord): Promise<void> {
    if (rec.address) {
      await addServiceAddress(rec.address, this.opts.address, linkOf(rec));
      await announceServiceAddress(rec.address, this.opts.address, linkOf(rec));
    }
    const changed = await setTreeTcpRepair(this.deps.syscalls, await listTree(rec.pid), false);
    // CRIU locked a network namespace of the workload's own whole, from inside.
    if (rec.migration?.lockTable) await dropCriuNetworkLock(rec.migration.lockTable, rec.ownNetwork ? rec.pid : undefined);
    this.deps.log.info({ workload: rec.name, address: rec.address, connections: changed }, 'connections revived on the source');
  }
}

/**
 * The part of a live stream that is not known yet when it starts: the data path's own live files
 * (or none), given once the dump is over; or a failure, which fails the stream (and the transfer).
 */
class DeferredLive {
  private settle!: (source: AsyncIterable<LiveImageFile> | FerryError | undefined) => void;
  private readonly source = new Promise<AsyncIterable<LiveImageFile> | FerryError | undefined>((resolve) => (this.settle = resolve));

  resolve(live?: AsyncIterable<LiveImageFile>): void {
    this.settle(live);
  }

  fail(err: FerryError): void {
    this.settle(err);
  }

  async *files(): AsyncGenerator<LiveImageFile> {
    const source = await this.source;
    if (source instanceof FerryError) throw source;
    if (source) yield* source;
  }
}
