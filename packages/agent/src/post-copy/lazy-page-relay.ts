/**
 * Target side of post-copy: a page server for `criu lazy-pages --page-server` that answers from
 * the source. CRIU's lazy-pages daemon asks its page server for runs of a task's pages
 * (PS_IOV_GET) when the restored workload faults on one, and in the background for all the rest;
 * this relay forwards each request to the source agent (page-requests.ts in @ferry/transfer) and
 * writes the pages back in CRIU's wire format (criu/page-xfer.c):
 *
 *   request  page_server_iov {u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id}   (CRIU >= 4.2)
 *   reply    the same header with cmd = PS_IOV_ADD_F | PE_PRESENT << 16, then nr_pages * 4096 bytes
 *   PS_IOV_CLOSE / PS_IOV_FORCE_CLOSE  ->  a 4-byte status 0
 *
 * The daemon reads replies in the order it sent requests, so they are written in that order,
 * while the source is asked for several at once (a fault does not wait behind a background run
 * for longer than that run's own round trip). The relay and the daemon talk over a socket pair
 * the agent made (the daemon's end passed as `--ps-socket`): nothing listens, nobody else can ask.
 */
import type { Socket } from 'node:net';
import { ErrorCode, FerryError, toFerryError } from '@ferry/protocol';
import type { PageRun } from '@ferry/transfer';
import type { Logger } from '@ferry/protocol';
import { decodeIov, encodeIov, PAGE_SERVER_IOV_BYTES, PE_PRESENT, PS_CMD_BITS, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE, PS_IOV_GET, type PageServerIov } from '../criu/criu-page-protocol';

/** More than this many requests unanswered is not CRIU (it has one background run and the faults of a few threads). */
const MAX_PENDING_REQUESTS = 1024;

/** Fetches up to `nr` pages of task `pid` from `vaddr` (from the source). */
export type PageFetcher = (pid: number, vaddr: number, nr: number) => Promise<PageRun>;

export interface RelayStats {
  requests: number;
  pages: number;
  /** Longest time one request waited for the source, ms. */
  maxWaitMs: number;
}

/** A page server session for CRIU's lazy-pages daemon: over once the daemon has every page. */
export interface PageServerSession {
  /** Settles when the daemon closed the session (with the counts) or it failed (RESTORE_FAILED and why). */
  readonly done: Promise<RelayStats>;
  /** Ends it (a failed restore): the daemon sees its page server go away. */
  stop(reason: string): void;
}

export class LazyPageRelay implements PageServerSession {
  /** Settles when CRIU closed the session (PS_IOV_CLOSE) or the relay failed; rejects with why. */
  readonly done: Promise<RelayStats>;
  private resolveDone!: (s: RelayStats) => void;
  private rejectDone!: (e: FerryError) => void;
  private settled = false;
  private session: Socket | undefined;
  private readonly stats: RelayStats = { requests: 0, pages: 0, maxWaitMs: 0 };

  private constructor(
    private readonly fetch: PageFetcher,
    private readonly log: Logger,
  ) {
    this.done = new Promise<RelayStats>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined);
  }

  /** Serves the one session of the lazy-pages daemon on the other end of `socket` (its socket pair). */
  static start(fetch: PageFetcher, log: Logger, socket: Socket): LazyPageRelay {
    const relay = new LazyPageRelay(fetch, log);
    relay.accept(socket);
    return relay;
  }

  /** Ends the relay (a failed restore): the daemon sees its page server go away. */
  stop(reason: string): void {
    this.fail(new FerryError(ErrorCode.RESTORE_FAILED, `lazy page relay stopped: ${reason}`));
  }

  private accept(socket: Socket): void {
    if (this.session !== undefined || this.settled) {
      socket.destroy();
      return;
    }
    this.session = socket;
    let buffered: Buffer = Buffer.alloc(0);
    // Replies go out in request order: each waits for the one before it.
    let previous: Promise<void> = Promise.resolve();
    let pending = 0;
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= PAGE_SERVER_IOV_BYTES && !this.settled) {
        let iov: PageServerIov;
        try {
          iov = decodeIov(buffered.subarray(0, PAGE_SERVER_IOV_BYTES));
        } catch (err) {
          this.fail(toFerryError(err, ErrorCode.INVALID_ARGUMENT));
          return;
        }
        buffered = buffered.subarray(PAGE_SERVER_IOV_BYTES);
        const cmd = iov.cmd & ((1 << PS_CMD_BITS) - 1);
        if (cmd === PS_IOV_GET) {
          if (++pending > MAX_PENDING_REQUESTS) {
            this.fail(new FerryError(ErrorCode.INVALID_ARGUMENT, `more than ${MAX_PENDING_REQUESTS} page requests unanswered`));
            return;
          }
          const asked = performance.now();
          const pages = this.fetch(iov.dstId, iov.vaddr, iov.nrPages);
          pages.catch(() => undefined);
          const before = previous;
          previous = (async () => {
            await before;
            const run = await pages;
            this.stats.maxWaitMs = Math.max(this.stats.maxWaitMs, performance.now() - asked);
            this.stats.requests += 1;
            this.stats.pages += run.nr;
            pending -= 1;
            if (this.settled) return;
            socket.cork();
            socket.write(encodeIov({ cmd: (PE_PRESENT << PS_CMD_BITS) | PS_IOV_ADD_F, nrPages: run.nr, vaddr: run.vaddr, dstId: iov.dstId }));
            socket.write(run.data);
            socket.uncork();
          })();
          previous.catch((err: unknown) => this.fail(toFerryError(err, ErrorCode.TRANSFER_FAILED)));
        } else if (cmd === PS_IOV_CLOSE || iov.cmd === PS_IOV_FORCE_CLOSE) {
          void previous.then(() => {
            if (this.settled) return;
            const status = Buffer.alloc(4);
            socket.end(status);
            this.settled = true;
            this.log.info({ ...this.stats }, 'lazy-pages daemon has every page');
            this.resolveDone({ ...this.stats });
          });
        } else {
          this.fail(new FerryError(ErrorCode.INVALID_ARGUMENT, `page server command ${iov.cmd} is not one a lazy-pages daemon sends`));
          return;
        }
      }
    });
    socket.on('error', (err) => this.fail(new FerryError(ErrorCode.RESTORE_FAILED, `lazy-pages daemon connection failed: ${err.message}`, { cause: err })));
    socket.on('close', () => {
      if (!this.settled) this.fail(new FerryError(ErrorCode.RESTORE_FAILED, 'the lazy-pages daemon went away before it had every page'));
    });
  }

  private fail(err: FerryError): void {
    if (this.settled) return;
    this.settled = true;
    this.session?.destroy();
    this.log.warn({ code: err.code, err: err.message, ...this.stats }, 'lazy page relay failed');
    this.rejectDone(err);
  }
}
