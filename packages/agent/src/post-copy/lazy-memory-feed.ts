/**
 * Target side of lazy and post-copy restores: the `criu lazy-pages` daemon that fills a restored
 * tree's memory after it runs again, and where that daemon gets the pages from:
 * - lazy: the received images, on this host;
 * - post-copy through the page tunnel: the source's lazy dump at the tunnel's far end, asked by
 *   @ferry/native's pageRelay, which fetches ahead of the daemon;
 * - post-copy, the source's CRIU reachable: straight from the source's lazy dump, over mutual TLS;
 * - post-copy otherwise: a relay (LazyPageRelay, on the other end of the daemon's socket pair)
 *   that asks the source agent over NATS, a prefetcher (PagePrefetcher) pulling ahead of the faults.
 */
import { readdir, type FileHandle } from 'node:fs/promises';
import { Socket } from 'node:net';
import { totalmem } from 'node:os';
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError, toFerryError, type Logger, type PageServerClientTls } from '@ferry/protocol';
import { packLazyServeRuns, packPageRelayRuns, PAGE_RELAY_MAX_PAGES, type LazyServeProtocol, type LazyServeRun, type LinuxSyscalls, type PageRelayRun } from '@ferry/native';
import { requestPages } from '@ferry/transfer';
import type { CriuDriver } from '../criu/criu-driver';
import { LazyPagesDaemon } from '../criu/criu-service';
import { PE_PRESENT, PS_CMD_BITS, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE, PS_IOV_GET } from '../criu/criu-page-protocol';
import { checkLazyRuns, lazyRunsOf, type LazyRun } from '../criu/pagemap-image';
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

/**
 * How far post-copy's pull fetches ahead of CRIU's daemon (pageRelay): 1 MiB a fetch, 6 in flight,
 * 48 MiB fetched and not yet taken at most. The daemon copies each run into the workload before it
 * asks for the next; meanwhile the next ones cross. A fault waits behind at most the 6 MiB in
 * flight (CRIU's own background run is up to 4 MiB).
 */
export const PULL_AHEAD = { chunkPages: 256, window: 6, cacheBytes: 48 * 1024 * 1024 } as const;

/**
 * Starts the daemon for a post-copy restore through the page tunnel: `tunnelFd` is the tunnel's
 * local end (the source's lazy dump at its far end). @ferry/native's pageRelay sits between the
 * two: it passes the daemon's requests on and asks the source ahead for the lazy runs the daemon
 * will want next (each task's, by address: the daemon's own order, from this host's pagemaps),
 * answering the daemon from them. It closes `tunnelFd` when it ends, which ends the tunnel.
 */
export async function startTunnelledPostCopyMemory(
  criu: CriuDriver,
  imagesDir: string,
  tunnelFd: number,
  syscalls: Pick<LinuxSyscalls, 'socketpair' | 'close' | 'pageRelay'>,
  log: Logger,
): Promise<LazyMemoryFeed> {
  let ends: [number, number];
  let plan: Uint8Array;
  try {
    plan = packPageRelayRuns(relayPlan(await lazyRunsOf(imagesDir, await readdir(imagesDir))));
    ends = syscalls.socketpair();
  } catch (err) {
    syscalls.close(tunnelFd);
    throw new FerryError(ErrorCode.RESTORE_FAILED, `post-copy's pull could not be planned: ${toFerryError(err).message}`, { cause: err });
  }
  const [criuFd, relayFd] = ends;
  const stopper = new AbortController();
  const relaying = syscalls.pageRelay(relayFd, tunnelFd, plan, LAZY_SERVE_PROTOCOL, { ...PULL_AHEAD, waitForBackground: true, signal: stopper.signal });
  const session = nativeSession(relaying, stopper, 'post-copy page relay failed', log, () => {
    syscalls.close(relayFd);
    syscalls.close(tunnelFd);
  });
  return { daemon: await startDaemonFor(criu, imagesDir, criuFd, session, syscalls), relay: session };
}

/**
 * A page server on a native thread (lazyServe, pageRelay) as the daemon's session: its counts
 * logged once the daemon has every page, its failure RESTORE_FAILED saying `failure` and why,
 * `release` run either way, `stopper` ending it.
 */
function nativeSession(
  running: Promise<{ requests: number; pages: number }>,
  stopper: AbortController,
  failure: string,
  log: Logger,
  release: () => void | Promise<void>,
): PageServerSession {
  const done = running
    .then(
      (counts) => {
        log.info({ ...counts }, 'lazy-pages daemon has every page');
        return { requests: counts.requests, pages: counts.pages, maxWaitMs: 0 };
      },
      (err: unknown) => {
        const why = toFerryError(err, ErrorCode.RESTORE_FAILED);
        log.warn({ err: why.message }, failure);
        throw new FerryError(ErrorCode.RESTORE_FAILED, `${failure}: ${why.message}`, { cause: err });
      },
    )
    .finally(release);
  done.catch(() => undefined);
  return { done, stop: (reason) => stopper.abort(reason) };
}

/**
 * The relay's plan: every task's lazy runs sorted by (task, address), checked against this host's
 * memory, at most PAGE_RELAY_MAX_PAGES pages (a page beyond is still served: asked when the daemon
 * asks for it).
 */
export function relayPlan(runs: LazyRun[], maxBytes = totalmem()): PageRelayRun[] {
  checkLazyRuns(runs, maxBytes);
  const sorted = [...runs].sort((a, b) => a.pid - b.pid || a.vaddr - b.vaddr);
  const plan: PageRelayRun[] = [];
  let pages = 0;
  for (const run of sorted) {
    const take = Math.min(run.nrPages, PAGE_RELAY_MAX_PAGES - pages);
    if (take <= 0) break;
    plan.push({ task: run.pid, vaddr: run.vaddr, pages: take });
    pages += take;
  }
  return plan;
}

/** Where a lazy restore's pages lie in this host's files (migration/local-lazy-pages.ts). */
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
  const session = nativeSession(serving, stopper, 'serving the lazy pages failed', log, async () => {
    syscalls.close(serveFd);
    await closeFiles();
  });
  return { daemon: await startDaemonFor(criu, imagesDir, criuFd, session, syscalls), relay: session };
}
