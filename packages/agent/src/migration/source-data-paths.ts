/**
 * The source side's data paths: how a frozen workload's memory leaves this host. The coordinator
 * chooses one per migration (CheckpointRequest.memory); the checkpoint runs the same steps for
 * every path and each path fills them in:
 * - `image`: CRIU dumps everything into the work dir and ferry's sealed stream carries it all;
 * - `stream`: `criu dump --stream` hands this agent each image as a pipe (image-streamer.ts); the
 *   memory pages go on the wire through the sealed pump while CRIU dumps, the rest after it;
 * - `page-server`: CRIU's dump sends the memory pages to the target's `criu page-server` (mutual
 *   TLS where both hosts have it) while it dumps; the stream carries the rest;
 * - `lazy-dump` (post-copy): `criu dump --lazy-pages` keeps the memory in its pipes and serves it,
 *   to the target's CRIU straight over mutual TLS when the hosts reach each other, else through
 *   this agent over NATS;
 * - `lazy-rewrite` (post-copy where CRIU cannot lazy-dump): a full dump rewritten to a lazy dump's
 *   layout, the lazy pages served by this agent over NATS from the pages file.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError, openPageServerTls, pageServerTlsKey, sealPageServerTls, toFerryError, type CriuInfo, type Logger, type MemoryPath, type PageServerClientTls, type PageServerEndpoint, type PageServerTls, type PageTunnelEndpoint, type StreamTransport } from '@ferry/protocol';
import type { LiveImageFile, TransferStats } from '@ferry/transfer';
import type { CriuDriver, CriuDumpRequest } from '../criu/criu-driver';
import { LazyDump } from '../criu/criu-service';
import { CaptureStreamer, type StreamerSyscalls } from '../criu/image-streamer';
import { lazyRunBytes, lazyRunsOf, type LazyRun } from '../criu/pagemap-image';
import { criuTlsArgs, makePageServerTls, writePageServerClientTls } from '../criu/page-server-tls';
import type { WorkDirs } from '../host/work-dir';
import { CriuDirectLazySource, CriuLazySource, CriuPageClient, LazyMemorySource, type PostCopySource } from '../post-copy/post-copy-source';
import type { MemoryPrecopy } from './memory-precopy';
import { openSourceTunnel, type PageTunnelEnd, type TunnelSyscalls } from './page-tunnel';

/** What one checkpoint's data path needs to know. */
export interface DataPathContext {
  nc: NatsConnection;
  criu: CriuDriver;
  criuInfo: CriuInfo;
  workDirs: WorkDirs;
  /** This host's registered address: where a lazy dump listens for the target's CRIU. */
  hostAddress: string;
  migrationId: string;
  transferId: string;
  imageKey: Uint8Array | null;
  /** Images dir of this migration (the stream sends what it holds). */
  dir: string;
  log: Logger;
  /** The native socket pair and sealed pump of the page tunnel, and the image streamer's calls. */
  syscalls: TunnelSyscalls & StreamerSyscalls;
  /** Starts ferry's image stream of `dir` (the caller's options); with `live`, while the dump still runs. */
  sendImage(live?: AsyncIterable<LiveImageFile>): Promise<TransferStats>;
  /** How ferry's stream will carry the images (`nats`: the hosts are not to talk directly). */
  stream: StreamTransport;
  /** The memory pre-copied while the workload ran: the streamed dump sends its pages as a delta of it. */
  memoryPrecopy?: MemoryPrecopy;
}

export interface DumpedImage {
  durationMs: number;
  /** CRIU's dump log (its network-lock table is read from it). */
  logPath: string;
  /** Memory bytes that already left the host during the dump (page server), else 0. */
  bytesOnWire: number;
}

/** One way a checkpoint's memory leaves this host. */
export interface SourceDataPath {
  /** What the migration's result calls it: the page server, or whatever the stream used. */
  readonly transportName: 'page-server' | 'page-tunnel' | null;
  /** Freezes and dumps the tree (the caller holds the host's dump lock). */
  dump(request: CriuDumpRequest): Promise<DumpedImage>;
  /**
   * The image stream, once the dump is over and the directory complete (the manifest written):
   * started now, or, for a path that started it with the dump, finished.
   */
  send(): Promise<TransferStats>;
  /** After the dump, before the stream: what post-copy keeps on this host for the target, if anything. */
  keepLazyMemory(): Promise<PostCopySource | undefined>;
  /**
   * After the stream: how the target's restore reaches the kept memory. Either an endpoint for its
   * CRIU, or a replacement source this agent serves (which the caller registers instead).
   */
  afterSend(sent: TransferStats): Promise<{ lazyPageServer?: PageServerEndpoint; source?: PostCopySource }>;
  /** The checkpoint failed: stop whatever holds the tree (the caller then thaws it). */
  abort(): void;
}

/**
 * The data path the coordinator chose. A choice this host's probe ruled out is refused (the
 * coordinator decides from the probe it was sent, so this means the two disagree).
 */
export function sourceDataPath(memory: MemoryPath, ctx: DataPathContext, pageServer?: PageServerEndpoint, pageTunnel?: PageTunnelEndpoint): SourceDataPath {
  switch (memory) {
    case 'page-tunnel':
      if (!pageTunnel) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'the page-tunnel data path needs the target\'s tunnel endpoint');
      if (!ctx.imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'the page tunnel needs the migration\'s image key (its keys derive from it)');
      if (!ctx.criuInfo.pageTunnel) throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'this host cannot use the page tunnel (its probe says no)');
      return new PageTunnelDumpPath(ctx, pageTunnel, ctx.imageKey);
    case 'image':
      return new ImageDumpPath(ctx);
    case 'stream':
      if (!ctx.criuInfo.stream) throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'this host cannot stream a dump (its CRIU probe says no)');
      return new StreamDumpPath(ctx);
    case 'page-server':
      if (!pageServer) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'the page-server data path needs the target page server endpoint');
      return new PageServerDumpPath(ctx, pageServer);
    case 'lazy-dump':
      if (!ctx.criuInfo.lazyDump) throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'this host cannot lazy-dump (its CRIU probe says no)');
      if (pageTunnel && !ctx.imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'the page tunnel needs the migration\'s image key (its keys derive from it)');
      return new CriuLazyDumpPath(ctx, pageTunnel && ctx.imageKey ? { endpoint: pageTunnel, imageKey: ctx.imageKey } : undefined);
    case 'lazy-rewrite':
      return new LazyRewritePath(ctx);
  }
}

/** Everything into the work dir; the stream carries it. */
class ImageDumpPath implements SourceDataPath {
  readonly transportName: 'page-server' | 'page-tunnel' | null = null;
  constructor(protected readonly ctx: DataPathContext) {}

  async dump(request: CriuDumpRequest): Promise<DumpedImage> {
    const dumped = await this.ctx.criu.dump(request);
    return { durationMs: dumped.durationMs, logPath: dumped.logPath, bytesOnWire: 0 };
  }

  send(): Promise<TransferStats> {
    return this.ctx.sendImage();
  }

  async keepLazyMemory(): Promise<PostCopySource | undefined> {
    return undefined;
  }

  async afterSend(): Promise<{ lazyPageServer?: PageServerEndpoint; source?: PostCopySource }> {
    return {};
  }

  abort(): void {}
}

/**
 * `criu dump --stream`: CRIU hands each image to this agent as a pipe (image-streamer.ts) and the
 * image stream starts with the dump, so the memory pages go on the wire, sealed by the native pump,
 * while CRIU splices them out of the frozen tree: the dump and the transfer overlap, and the pages
 * never touch this host's disk. The small images are drained into the work dir and follow once the
 * dump is over. Where the stream cannot be pumped (no direct path) the sender writes the pages
 * into the work dir instead (@ferry/transfer live-spill.ts), which is the plain dump again.
 */
class StreamDumpPath extends ImageDumpPath {
  private streamer: CaptureStreamer | undefined;
  private sending: Promise<TransferStats> | undefined;

  override async dump(request: CriuDumpRequest): Promise<DumpedImage> {
    const { syscalls: sys, criu, dir, log } = this.ctx;
    const streamer = await CaptureStreamer.listen(sys, dir, log);
    this.streamer = streamer;
    const live = this.ctx.memoryPrecopy ? this.ctx.memoryPrecopy.deltas(streamer.liveFiles()) : streamer.liveFiles();
    this.sending = this.ctx.sendImage(live);
    // A failed send stops the capture (CRIU's writes fail, so does the dump); its error is reported by send().
    this.sending.catch(() => undefined);
    try {
      const dumped = await criu.dump({ ...request, extraArgs: [...(request.extraArgs ?? []), '--stream'] });
      const counts = await streamer.criuDone();
      log.info({ ...counts, dumpMs: Math.round(dumped.durationMs) }, 'streamed dump done');
      return { durationMs: dumped.durationMs, logPath: dumped.logPath, bytesOnWire: 0 };
    } catch (err) {
      // The sender's own failure says more than CRIU's broken pipe.
      const sendFailure = await Promise.race([this.sending.then(() => undefined, (e: unknown) => e), new Promise((r) => setImmediate(r, undefined))]);
      streamer.abort(toFerryError(err, ErrorCode.CHECKPOINT_FAILED));
      if (sendFailure !== undefined) {
        // The stream's failure is the cause (a dead or refusing receiver, a forged frame): its code
        // is what the operator acts on, not the dump's broken pipe.
        const fe = toFerryError(sendFailure, ErrorCode.TRANSFER_FAILED);
        throw new FerryError(fe.code, `streamed dump failed: the image stream failed first (${fe.message})`, { cause: err });
      }
      throw err;
    }
  }

  override send(): Promise<TransferStats> {
    if (!this.streamer || !this.sending) return Promise.reject(new FerryError(ErrorCode.INTERNAL, 'the streamed dump has not started'));
    this.streamer.finish();
    return this.sending;
  }

  override abort(): void {
    this.streamer?.abort(new FerryError(ErrorCode.CHECKPOINT_FAILED, 'checkpoint aborted'));
  }
}

/** Memory pages to the target's `criu page-server` during the dump; the rest by the stream. */
class PageServerDumpPath extends ImageDumpPath {
  override readonly transportName = 'page-server' as const;
  constructor(
    ctx: DataPathContext,
    private readonly endpoint: PageServerEndpoint,
  ) {
    super(ctx);
  }

  /** The target's client key came sealed with this migration's key (protocol page-server-tls.ts). */
  private openClientTls(tls: PageServerTls): PageServerClientTls {
    if (!this.ctx.imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, "the target's page server credentials came without this migration's image key to open them");
    return openPageServerTls(tls, pageServerTlsKey(this.ctx.imageKey), this.ctx.migrationId);
  }

  override async dump(request: CriuDumpRequest): Promise<DumpedImage> {
    // The page server's client credentials exist on this host only for the dump (page-server-tls.ts).
    const tlsDir = this.ctx.workDirs.tlsPathFor(this.ctx.migrationId);
    try {
      const tlsArgs = this.endpoint.tls ? criuTlsArgs(await writePageServerClientTls(tlsDir, this.openClientTls(this.endpoint.tls))) : [];
      const pageServerArgs = ['--page-server', '--address', this.endpoint.address, '--port', String(this.endpoint.port), ...tlsArgs];
      const dumped = await this.ctx.criu.dump({ ...request, extraArgs: [...(request.extraArgs ?? []), ...pageServerArgs] });
      return { durationMs: dumped.durationMs, logPath: dumped.logPath, bytesOnWire: dumped.memoryBytesWritten ?? 0 };
    } finally {
      await rm(tlsDir, { recursive: true, force: true });
    }
  }
}

/**
 * Memory pages through ferry's page tunnel during the dump (page-tunnel.ts): CRIU writes them to
 * its end of a socket pair, this agent seals them natively onto one TCP connection to the target.
 */
class PageTunnelDumpPath extends ImageDumpPath {
  override readonly transportName = 'page-tunnel' as const;
  private end: PageTunnelEnd | undefined;

  constructor(
    ctx: DataPathContext,
    private readonly endpoint: PageTunnelEndpoint,
    private readonly imageKey: Uint8Array,
  ) {
    super(ctx);
  }

  override async dump(request: CriuDumpRequest): Promise<DumpedImage> {
    const { syscalls: sys, criu, log } = this.ctx;
    const { end, criuFd } = await openSourceTunnel(sys, this.endpoint, this.imageKey);
    this.end = end;
    let dumped: Awaited<ReturnType<CriuDriver['dump']>>;
    try {
      // criu's fd 3 (the first passed fd) is its page-server connection.
      dumped = await criu.dump({ ...request, passFds: [criuFd], extraArgs: [...(request.extraArgs ?? []), '--page-server', '--ps-socket', '3'] });
    } catch (err) {
      // A cut stream, never an end frame: the target's page server must not take this for a whole image.
      end.stop();
      throw err;
    } finally {
      // CRIU has exited: with our copy closed too, the pair's end reads EOF and the tunnel ends.
      sys.close(criuFd);
    }
    const counts = await end.done;
    log.info({ ...counts, dumpMs: Math.round(dumped.durationMs) }, 'page tunnel done');
    return { durationMs: dumped.durationMs, logPath: dumped.logPath, bytesOnWire: counts.sent };
  }

  override abort(): void {
    this.end?.stop();
  }
}

/** A full dump, its lazy memory split off and served by this agent over NATS. */
class LazyRewritePath extends ImageDumpPath {
  override async keepLazyMemory(): Promise<PostCopySource> {
    const { nc, transferId, dir, workDirs, migrationId, imageKey, log } = this.ctx;
    // The images the stream sends are what the rewrite leaves.
    return LazyMemorySource.prepare(nc, transferId, dir, workDirs.lazyPathFor(migrationId), imageKey, log);
  }
}

/**
 * `criu dump --lazy-pages`: the memory never written, served from CRIU's pipes: through ferry's
 * page tunnel where the coordinator opened one (to the target's `criu lazy-pages` on the tunnel's
 * far end), else to the target's CRIU straight over mutual TLS, or through this agent over NATS.
 */
class CriuLazyDumpPath implements SourceDataPath {
  readonly transportName: 'page-tunnel' | null;
  private lazyDump: LazyDump | undefined;
  private tls: Awaited<ReturnType<typeof makePageServerTls>> | undefined;
  private runs: LazyRun[] = [];
  private end: PageTunnelEnd | undefined;
  /** Without TLS: this agent's end of the socket pair the lazy dump serves on. */
  private pairEnd: number | undefined;

  constructor(
    private readonly ctx: DataPathContext,
    private readonly tunnel?: { endpoint: PageTunnelEndpoint; imageKey: Uint8Array },
  ) {
    this.transportName = tunnel ? 'page-tunnel' : null;
  }

  async dump(request: CriuDumpRequest): Promise<DumpedImage> {
    const { criu, criuInfo, workDirs, migrationId, hostAddress } = this.ctx;
    const lazyDir = workDirs.lazyPathFor(migrationId);
    await mkdir(lazyDir, { mode: 0o700 });
    if (this.tunnel) return this.dumpIntoTunnel(request, join(lazyDir, 'dump.log'), this.tunnel);
    // With TLS its page server listens on this host's address, for the target's CRIU to connect to
    // (the roles of page-server-tls.ts swapped), mutual TLS keeping everyone else out; else it
    // serves on a socket pair whose other end only this agent holds (nothing listens).
    // Pinned to NATS, the target's CRIU will not connect here: the pair is enough.
    this.tls = criuInfo.pageServerTls && this.ctx.stream !== 'nats' ? await makePageServerTls(join(lazyDir, 'tls'), hostAddress) : undefined;
    const logPath = join(lazyDir, 'dump.log');
    if (this.tls) {
      this.lazyDump = await LazyDump.start(criu, request, logPath, hostAddress, this.tls.server);
    } else {
      const { syscalls: sys } = this.ctx;
      const [criuFd, localFd] = sys.socketpair();
      try {
        this.lazyDump = await LazyDump.startOnSocket(criu, request, logPath, criuFd);
        this.pairEnd = localFd;
      } catch (err) {
        sys.close(localFd);
        throw err;
      } finally {
        sys.close(criuFd);
      }
    }
    // While CRIU serves the pages it holds the tree; if it dies, this keeps the tree stopped.
    await criu.holdStopped(request.pid);
    return { durationMs: this.lazyDump.durationMs, logPath, bytesOnWire: 0 };
  }

  send(): Promise<TransferStats> {
    return this.ctx.sendImage();
  }

  async keepLazyMemory(): Promise<PostCopySource> {
    const dump = this.requireDump();
    // Registered at once (as a direct source: closing it waits for CRIU to end), so a failed send still ends it.
    this.runs = await lazyRunsOf(this.ctx.dir, await readdir(this.ctx.dir));
    return new CriuDirectLazySource(dump, lazyRunBytes(this.runs));
  }

  /** The lazy dump serving its memory on a socket pair whose other end the page tunnel carries to the target. */
  private async dumpIntoTunnel(request: CriuDumpRequest, logPath: string, tunnel: { endpoint: PageTunnelEndpoint; imageKey: Uint8Array }): Promise<DumpedImage> {
    const { syscalls: sys, criu } = this.ctx;
    const { end, criuFd } = await openSourceTunnel(sys, tunnel.endpoint, tunnel.imageKey);
    this.end = end;
    try {
      this.lazyDump = await LazyDump.startOnSocket(criu, request, logPath, criuFd);
      // While CRIU serves the pages it holds the tree; if it dies, this keeps the tree stopped.
      await criu.holdStopped(request.pid);
    } catch (err) {
      end.stop();
      throw err;
    } finally {
      // CRIU holds its own copy; with ours closed its exit ends the pair, and so the tunnel.
      sys.close(criuFd);
    }
    end.done.catch((err: unknown) => this.ctx.log.warn({ err: (err as Error).message }, 'page tunnel of the lazy dump ended in failure'));
    return { durationMs: this.lazyDump.durationMs, logPath, bytesOnWire: 0 };
  }

  async afterSend(sent: TransferStats): Promise<{ lazyPageServer?: PageServerEndpoint; source?: PostCopySource }> {
    const dump = this.requireDump();
    // Through the tunnel: the target's daemon asks the lazy dump itself; the registered source waits for its end.
    if (this.tunnel) return {};
    if (this.tls && sent.transport === 'direct') {
      // The hosts reach each other: the target's CRIU fetches straight from ours, over mutual TLS.
      // Its client key goes out sealed with this migration's key: only the target can open it.
      if (!this.ctx.imageKey) throw new FerryError(ErrorCode.INVALID_ARGUMENT, "the lazy page server's credentials need this migration's image key to travel sealed");
      const tls = sealPageServerTls(this.tls.client, pageServerTlsKey(this.ctx.imageKey), this.ctx.migrationId);
      return { lazyPageServer: { address: dump.address, port: dump.port, tls } };
    }
    // Through NATS: this agent is CRIU's client and answers the target's page requests.
    const { nc, transferId, imageKey, log } = this.ctx;
    const client = this.tls
      ? await CriuPageClient.connect(dump.address, dump.port, this.tls.client)
      : CriuPageClient.onSocket(this.takePairEnd());
    return { source: await CriuLazySource.start(nc, transferId, dump, this.runs, imageKey, log, client) };
  }

  abort(): void {
    // A lazy dump that started holds the tree: it goes first (the tree stays stopped, then is thawed).
    this.lazyDump?.stop();
    this.end?.stop();
    if (this.pairEnd !== undefined) this.takePairEnd().destroy();
  }

  /** This agent's end of the pair, as a socket (which owns and closes the fd from then on). */
  private takePairEnd(): Socket {
    const fd = this.pairEnd;
    if (fd === undefined) throw new FerryError(ErrorCode.INTERNAL, 'the lazy dump has no socket pair');
    this.pairEnd = undefined;
    return new Socket({ fd, readable: true, writable: true });
  }

  private requireDump(): LazyDump {
    if (!this.lazyDump) throw new FerryError(ErrorCode.INTERNAL, 'the lazy dump has not started');
    return this.lazyDump;
  }
}
