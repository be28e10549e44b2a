/**
 * Source side of post-copy: the workload's lazy memory (private anonymous pages, nearly all of a
 * big workload) stays here, with the frozen tree, until the migration is released or rolled back,
 * so a failure at any point before the target has every page rolls back to an intact source. Three
 * ways to hand it out (docs/architecture.md):
 * - CriuDirectLazySource: CRIU's lazy dump holds it in its pipes and the target's CRIU fetches it
 *   straight, over mutual TLS;
 * - CriuLazySource: the same dump, this agent its client, answering the target's requests over NATS;
 * - LazyMemorySource: a full dump rewritten to a lazy dump's layout, the pages served from the
 *   original pages file over NATS (hosts without CriuInfo.lazyDump).
 */
import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError, PAGE_BYTES, type Logger, type PageServerClientTls } from '@ferry/protocol';
import { servePageRequests, type PageResponder, type PageRun } from '@ferry/transfer';
import { decodeIov, encodeIov, PAGE_SERVER_IOV_BYTES, PS_IOV_CLOSE, PS_IOV_GET, type PageServerIov } from '../criu/criu-page-protocol';
import type { LazyDump } from '../criu/criu-service';
import { LazyPageIndex, lazyRunBytes, splitForPostCopy, type LazyRun } from '../criu/pagemap-image';

export class LazyMemorySource implements PostCopySource {
  private constructor(
    private readonly indexes: Map<number, LazyPageIndex>,
    private readonly files: Map<number, FileHandle>,
    private responder: PageResponder | undefined,
    /** Bytes kept here for the target to fetch. */
    readonly lazyBytes: number,
  ) {}

  /**
   * Splits the dump in `imagesDir` (pagemap-image.ts), keeps the lazy part in `lazyDir` and starts
   * answering page requests of transfer `transferId`, sealed with `imageKey`.
   */
  static async prepare(
    nc: NatsConnection,
    transferId: string,
    imagesDir: string,
    lazyDir: string,
    imageKey: Uint8Array | null,
    log: Logger,
  ): Promise<LazyMemorySource> {
    // The checkpoint may have made it already.
    await mkdir(lazyDir, { recursive: true, mode: 0o700 });
    const split = await splitForPostCopy(imagesDir, lazyDir, await readdir(imagesDir));
    const files = new Map<number, FileHandle>();
    const source = new LazyMemorySource(split.indexes, files, undefined, split.lazyBytes);
    try {
      for (const [pid, index] of split.indexes) files.set(pid, await open(index.pagesFile, 'r'));
    } catch (err) {
      await source.close();
      throw err;
    }
    source.responder = servePageRequests(nc, transferId, (pid, vaddr, nr) => source.read(pid, vaddr, nr), { imageKey, logger: log });
    // Registered with the server before the image (and so the target's first request) can go.
    await nc.flush();
    log.info({ transferId, lazyBytes: split.lazyBytes, eagerBytes: split.eagerBytes, tasks: split.indexes.size }, 'lazy memory kept for post-copy');
    return source;
  }

  /** Page bytes sent to the target so far. */
  get bytesServed(): number {
    return this.responder?.stats().bytes ?? 0;
  }

  private async read(pid: number, vaddr: number, nr: number): Promise<PageRun> {
    const index = this.indexes.get(pid);
    const file = this.files.get(pid);
    const run = index?.locate(vaddr, nr);
    if (index === undefined || file === undefined || run === undefined) {
      throw new FerryError(ErrorCode.NOT_FOUND, `no lazy page at ${vaddr.toString(16)} of task ${pid}`);
    }
    const data = Buffer.allocUnsafe(run.nrPages * PAGE_BYTES);
    const { bytesRead } = await file.read(data, 0, data.length, run.offset);
    if (bytesRead !== data.length) throw new FerryError(ErrorCode.INTERNAL, `lazy pages of task ${pid} end early at ${run.offset + bytesRead}`);
    return { vaddr, nr: run.nrPages, data };
  }

  /** Stops answering and closes the pages files (the caller removes the lazy dir). */
  async close(): Promise<void> {
    this.responder?.close();
    this.responder = undefined;
    for (const fh of this.files.values()) await fh.close().catch(() => undefined);
    this.files.clear();
  }
}

/** What a migration's source keeps for post-copy until release or rollback. */
export interface PostCopySource {
  /** Bytes kept here for the target to fetch. */
  readonly lazyBytes: number;
  /** Page bytes sent to the target so far. */
  readonly bytesServed: number;
  /** Stops serving; afterwards the frozen tree is the agent's to kill or thaw. */
  close(): Promise<void>;
}

/**
 * A client of `criu dump --lazy-pages`'s page server (LazyDump in criu-service.ts), speaking to it
 * as CRIU's own lazy-pages daemon would: PS_IOV_GET requests pipelined on one connection, replies
 * read back in request order.
 */
export class CriuPageClient {
  /** Received and not yet parsed, in arrival order (joined only once a whole reply is there). */
  private chunks: Buffer[] = [];
  private chunkBytes = 0;
  private readonly pending: Array<{ resolve: (r: PageRun) => void; reject: (e: FerryError) => void; closing?: boolean }> = [];
  private current: { iov: PageServerIov; need: number } | undefined;
  private failure: FerryError | undefined;

  private constructor(private readonly sock: Socket) {
    // A TCP connection (the TLS page server): no Nagle delay on the small requests. A socket pair has none.
    if (typeof sock.setNoDelay === 'function' && sock.remoteAddress !== undefined) sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err) => this.fail(new FerryError(ErrorCode.UNAVAILABLE, `CRIU's lazy-dump page server: ${err.message}`, { cause: err })));
    sock.on('close', () => this.fail(new FerryError(ErrorCode.UNAVAILABLE, "CRIU's lazy-dump page server closed the connection")));
  }

  /** A session on an already connected socket: this agent's end of the pair the lazy dump serves on (`--ps-socket`). */
  static onSocket(sock: Socket): CriuPageClient {
    return new CriuPageClient(sock);
  }

  /** Connects to it at `address:port`, with TLS when it listens with TLS (the target's client credentials serve here too). */
  static async connect(address: string, port: number, tls?: PageServerClientTls): Promise<CriuPageClient> {
    const sock: Socket = tls ? tlsConnect({ host: address, port, ca: tls.caCert, cert: tls.cert, key: tls.key }) : connect(port, address);
    await new Promise<void>((resolve, reject) => {
      sock.once(tls ? 'secureConnect' : 'connect', () => resolve());
      sock.once('error', (err) => reject(new FerryError(ErrorCode.UNAVAILABLE, `cannot reach CRIU's lazy-dump page server: ${err.message}`, { cause: err })));
    });
    return new CriuPageClient(sock);
  }

  /** Up to `nr` pages of task `pid` from `vaddr` (only ever asked for pages CRIU left lazy: it ends the session otherwise). */
  get(pid: number, vaddr: number, nr: number): Promise<PageRun> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<PageRun>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.sock.write(encodeIov({ cmd: PS_IOV_GET, nrPages: nr, vaddr, dstId: pid }));
    });
  }

  /** Ends the session (PS_IOV_CLOSE, after the requests before it): CRIU then finishes its dump. */
  async close(): Promise<void> {
    if (this.failure) return;
    await new Promise<void>((resolve) => {
      this.pending.push({ resolve: () => resolve(), reject: () => resolve(), closing: true });
      this.sock.write(encodeIov({ cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 }));
    });
    this.failure = new FerryError(ErrorCode.UNAVAILABLE, 'page session closed');
    this.sock.end();
  }

  /** The first `n` received bytes, removed from the buffer (a copy only when they span reads). */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0];
        const part = Math.min(c.length, n - at);
        c.copy(out, at, 0, part);
        at += part;
        if (part === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(part);
      }
    }
    this.chunkBytes -= n;
    return out;
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.chunkBytes += chunk.length;
    for (;;) {
      const head = this.pending[0];
      if (head === undefined) return;
      if (head.closing) {
        if (this.chunkBytes < 4) return;
        this.take(4);
        this.pending.shift();
        head.resolve({ vaddr: 0, nr: 0, data: Buffer.alloc(0) });
        continue;
      }
      if (this.current === undefined) {
        if (this.chunkBytes < PAGE_SERVER_IOV_BYTES) return;
        let iov: PageServerIov;
        try {
          iov = decodeIov(this.take(PAGE_SERVER_IOV_BYTES));
        } catch (err) {
          // Thrown in a socket event it would take the agent down: the session fails instead.
          this.fail(err instanceof FerryError ? err : new FerryError(ErrorCode.INVALID_ARGUMENT, String(err)));
          this.sock.destroy();
          return;
        }
        this.current = { iov, need: iov.nrPages * PAGE_BYTES };
      }
      if (this.chunkBytes < this.current.need) return;
      const data = this.take(this.current.need);
      const { iov } = this.current;
      this.current = undefined;
      this.pending.shift();
      head.resolve({ vaddr: iov.vaddr, nr: iov.nrPages, data });
    }
  }

  private fail(err: FerryError): void {
    if (this.failure) return;
    this.failure = err;
    for (const p of this.pending.splice(0)) p.reject(err);
  }
}

/**
 * Post-copy source over `criu dump --lazy-pages`: the target's page requests go to CRIU's page
 * server, which holds the lazy memory in the pipes it spliced it into (never written anywhere).
 * Requests are checked against the lazy runs of the dump's pagemaps first: CRIU ends the whole
 * session on a request for a page it does not hold.
 */
export class CriuLazySource implements PostCopySource {
  private constructor(
    private readonly dump: LazyDump,
    private readonly client: CriuPageClient,
    private readonly responder: PageResponder,
    readonly lazyBytes: number,
  ) {}

  /** `runs`: the lazy runs of the dump's pagemaps (lazyRunsOf); `client`: this agent's session with the dump's page server. */
  static async start(
    nc: NatsConnection,
    transferId: string,
    dump: LazyDump,
    runs: LazyRun[],
    imageKey: Uint8Array | null,
    log: Logger,
    client: CriuPageClient,
  ): Promise<CriuLazySource> {
    const byPid = new Map<number, LazyPageIndex>();
    for (const pid of new Set(runs.map((r) => r.pid))) byPid.set(pid, LazyPageIndex.fromRuns(pid, runs.filter((r) => r.pid === pid)));
    const responder = servePageRequests(
      nc,
      transferId,
      async (pid, vaddr, nr) => {
        const run = byPid.get(pid)?.locate(vaddr, nr);
        if (run === undefined) throw new FerryError(ErrorCode.NOT_FOUND, `no lazy page at ${vaddr.toString(16)} of task ${pid}`);
        return client.get(pid, vaddr, run.nrPages);
      },
      { imageKey, logger: log },
    );
    await nc.flush();
    const lazyBytes = lazyRunBytes(runs);
    log.info({ transferId, lazyBytes, tasks: byPid.size, port: dump.port }, 'lazy memory left in CRIU for post-copy');
    return new CriuLazySource(dump, client, responder, lazyBytes);
  }

  get bytesServed(): number {
    return this.responder.stats().bytes;
  }

  async close(): Promise<void> {
    this.responder.close();
    await this.client.close();
    // CRIU finishes the dump once the session is over; the tree stays stopped (--leave-stopped).
    await awaitDumpEnd(this.dump);
  }
}

/** How long a lazy dump may take to finish once its page session is over (or its client gone). */
const LAZY_DUMP_END_TIMEOUT_MS = 10_000;

/**
 * Post-copy source where the target's `criu lazy-pages` connects to the lazy dump's page server
 * itself (over mutual TLS, the hosts reaching each other): no ferry code in the pages' path. The
 * session ends when the target's daemon has every page (PS_IOV_CLOSE) or goes away; then CRIU
 * finishes its dump and leaves the tree stopped.
 */
export class CriuDirectLazySource implements PostCopySource {
  constructor(
    private readonly dump: LazyDump,
    readonly lazyBytes: number,
  ) {}

  /** CRIU's own session: not counted here (the target's restore reply says what it received). */
  get bytesServed(): number {
    return 0;
  }

  async close(): Promise<void> {
    await awaitDumpEnd(this.dump);
  }
}

/**
 * Waits for a lazy dump to exit once its session is over. If nobody ends the session (the target's
 * host is gone), CRIU is killed; the tree stays stopped (the agent's SIGSTOP, holdStopped in
 * criu-driver.ts) for the release to kill or the rollback to thaw.
 */
async function awaitDumpEnd(dump: LazyDump): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    dump.done.then(() => true, () => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), LAZY_DUMP_END_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (!ended) dump.stop();
}
