/**
 * Target side of lazy and post-copy restores: the `criu lazy-pages` daemon that fills a restored
 * tree's memory after it runs again, and where that daemon gets the pages from:
 * - lazy: the received images, on this host;
 * - post-copy, the source's CRIU reachable: straight from the source's lazy dump, over mutual TLS;
 * - post-copy otherwise: a relay (LazyPageRelay, on the other end of the daemon's socket pair)
 *   that asks the source agent over NATS, a prefetcher (PagePrefetcher) pulling ahead of the faults.
 */
import { readdir, type FileHandle } from 'node:fs/promises';
import { Socket } from 'node:net';
import { totalmem } from 'node:os';
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError, toFerryError, type Logger, type PageServerClientTls } from '@ferry/protocol';
import { packLazyServeRuns, type LazyServeProtocol, type LazyServeRun, type LinuxSyscalls } from '@ferry/native';
import { requestPages } from '@ferry/transfer';
import type { CriuDriver } from '../criu/criu-driver';
import { LazyPagesDaemon } from '../criu/criu-service';
import { PE_PRESENT, PS_CMD_BITS, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE, PS_IOV_GET } from '../criu/criu-page-protocol';
import { checkLazyRuns, lazyRunsOf } from '../criu/pagemap-image';
import { writePageServerClientTls } from '../criu/page-server-tls';
import { LazyPageRelay, type PageServerSession } from './lazy-page-relay';
import { PagePrefetcher } from './page-prefetch';

export interface LazyMemoryFeed {
  daemon: LazyPagesDaemon;
  /** Post-copy through NATS, or pre-copied memory: the page server CRIU's daemon asks, until the last page. */
  relay?: PageServerSession;
  /** Post-copy through NATS: to start once the tree runs (not before, to leave the CPU to the restore). */
  prefetch?: PagePrefetcher;
}

export interface LazyMemorySourceRef {
  nc: NatsConnection;
  transferId: string;
  /** Key the source seals its page replies with (pageRequestKey of the image key). */
  pagesKey: Buffer | null;
  /** The source's CRIU page server, when the target's CRIU may fetch from it straight (its client key opened). */
  lazyPageServer?: OpenedPageServerEndpoint;
  /** Where that page server's client credentials are written for CRIU. */
  tlsDir: string;
  /** The socket pair between the daemon and the relay. */
  syscalls: Pick<LinuxSyscalls, 'socketpair' | 'close'>;
}

/** A page server's endpoint with its client credentials opened (protocol openPageServerTls). */
export interface OpenedPageServerEndpoint {
  address: string;
  port: number;
  tls?: PageServerClientTls;
}

/** Starts the daemon for a lazy restore from the images in `imagesDir`. */
export async function startLocalLazyMemory(criu: CriuDriver, imagesDir: string): Promise<LazyMemoryFeed> {
  return { daemon: await LazyPagesDaemon.start(criu, imagesDir) };
}

/** Starts the daemon for a post-copy restore: the lazy memory is still on the source. */
export async function startPostCopyMemory(criu: CriuDriver, imagesDir: string, source: LazyMemorySourceRef, log: Logger): Promise<LazyMemoryFeed> {
  const ps = source.lazyPageServer;
  if (ps) {
    // The lazy memory is in the source's CRIU: ours fetches it from there, over mutual TLS.
    const tls = ps.tls ? await writePageServerClientTls(source.tlsDir, ps.tls) : undefined;
    return { daemon: await LazyPagesDaemon.start(criu, imagesDir, { address: ps.address, port: ps.port, ...(tls ? { tls } : {}) }) };
  }
  // CRIU's daemon asks the relay, the relay asks the source.
  const { nc, transferId, pagesKey } = source;
  const runs = await lazyRunsOf(imagesDir, await readdir(imagesDir));
  // The prefetcher plans a chunk per 256 KiB of every run: bounded before it does.
  checkLazyRuns(runs, totalmem());
  const prefetch = new PagePrefetcher((pid, vaddr, nr) => requestPages(nc, transferId, { pid, vaddr, nr }, { key: pagesKey ?? undefined }), runs);
  const [criuFd, relayFd] = source.syscalls.socketpair();
  const relay = LazyPageRelay.start((pid, vaddr, nr) => prefetch.get(pid, vaddr, nr), log, new Socket({ fd: relayFd, readable: true, writable: true }));
  relay.done
    .finally(() => {
      prefetch.stop();
      log.info({ ...prefetch.stats, fetchMs: Math.round(prefetch.stats.fetchMs) }, 'post-copy prefetch done');
    })
    .catch(() => undefined);
  return { daemon: await startDaemonFor(criu, imagesDir, criuFd, relay, source.syscalls), relay, prefetch };
}

/**
 * `criu lazy-pages --page-server` on `criuFd`, one end of a socket pair whose other end `session`
 * answers (the relay, or lazyServe); the session is stopped if the daemon does not start.
 */
async function startDaemonFor(
  criu: CriuDriver,
  imagesDir: string,
  criuFd: number,
  session: PageServerSession,
  syscalls: Pick<LinuxSyscalls, 'close'>,
): Promise<LazyPagesDaemon> {
  try {
    return await LazyPagesDaemon.start(criu, imagesDir, { socketFd: criuFd, relay: true });
  } catch (err) {
    session.stop('the lazy-pages daemon did not start');
    throw err;
  } finally {
    // The daemon holds its own copy: with ours closed, its exit ends the session.
    syscalls.close(criuFd);
  }
}

/** Where a lazy restore's pages lie in this host's files (page-delta.ts LocalLazyPages). */
export interface LocalPageTable {
  open(): Promise<{ runs: LazyServeRun[]; files: FileHandle[] }>;
}

/** The page-server protocol's numbers, for lazyServe (criu-page-protocol.ts). */
const LAZY_SERVE_PROTOCOL: LazyServeProtocol = {
  cmdMask: (1 << PS_CMD_BITS) - 1,
  getCmd: PS_IOV_GET,
  replyCmd: (PE_PRESENT << PS_CMD_BITS) | PS_IOV_ADD_F,
  closeCmd: PS_IOV_CLOSE,
  forceCloseCmd: PS_IOV_FORCE_CLOSE,
};

/**
 * Starts the daemon for a lazy restore of pre-copied memory: @ferry/native's lazyServe on the
 * other end of its socket pair answers it from the rebuilt image's files on this host (CRIU's
 * daemon cannot read the parent image those point into itself; page-delta.ts), with sendfile(2):
 * a page goes from the file to the daemon without passing through this process (a relay in
 * JavaScript cost half the CPU of a 1 GiB migration, measured with perf).
 */
export async function startLocalServedMemory(
  criu: CriuDriver,
  imagesDir: string,
  pages: LocalPageTable,
  syscalls: Pick<LinuxSyscalls, 'socketpair' | 'close' | 'lazyServe'>,
  log: Logger,
): Promise<LazyMemoryFeed> {
  const { runs, files } = await pages.open();
  const closeFiles = () => Promise.all(files.map((f) => f.close().catch(() => undefined)));
  let ends: [number, number];
  try {
    ends = syscalls.socketpair();
  } catch (err) {
    await closeFiles();
    throw err;
  }
  const [criuFd, serveFd] = ends;
  const stopper = new AbortController();
  const serving = syscalls.lazyServe(serveFd, packLazyServeRuns(runs), files.map((f) => f.fd), LAZY_SERVE_PROTOCOL, { signal: stopper.signal });
  const done = serving
    .then(
      ({ requests, pages: served }) => {
        log.info({ requests, pages: served }, 'lazy-pages daemon has every page');
        return { requests, pages: served, maxWaitMs: 0 };
      },
      (err: unknown) => {
        const why = toFerryError(err, ErrorCode.RESTORE_FAILED);
        log.warn({ err: why.message }, 'serving the lazy pages failed');
        throw new FerryError(ErrorCode.RESTORE_FAILED, `serving the lazy pages failed: ${why.message}`, { cause: err });
      },
    )
    .finally(async () => {
      syscalls.close(serveFd);
      await closeFiles();
    });
  done.catch(() => undefined);
  const session: PageServerSession = { done, stop: (reason) => stopper.abort(reason) };
  return { daemon: await startDaemonFor(criu, imagesDir, criuFd, session, syscalls), relay: session };
}
