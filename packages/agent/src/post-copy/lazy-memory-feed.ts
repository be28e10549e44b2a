/**
 * Target side of lazy and post-copy restores: the `criu lazy-pages` daemon that fills a restored
 * tree's memory after it runs again, and where that daemon gets the pages from:
 * - lazy: the received images, on this host;
 * - post-copy, the source's CRIU reachable: straight from the source's lazy dump, over mutual TLS;
 * - post-copy otherwise: a relay (LazyPageRelay, on the other end of the daemon's socket pair)
 *   that asks the source agent over NATS, a prefetcher (PagePrefetcher) pulling ahead of the faults.
 */
import { readdir } from 'node:fs/promises';
import { Socket } from 'node:net';
import { totalmem } from 'node:os';
import type { NatsConnection } from 'nats';
import type { Logger, PageServerClientTls } from '@ferry/protocol';
import type { LinuxSyscalls } from '@ferry/native';
import { requestPages } from '@ferry/transfer';
import type { CriuDriver } from '../criu/criu-driver';
import { LazyPagesDaemon } from '../criu/criu-service';
import { checkLazyRuns, lazyRunsOf } from '../criu/pagemap-image';
import { writePageServerClientTls } from '../criu/page-server-tls';
import { LazyPageRelay, type PageFetcher } from './lazy-page-relay';
import { PagePrefetcher } from './page-prefetch';

export interface LazyMemoryFeed {
  daemon: LazyPagesDaemon;
  /** Post-copy through NATS: the page server CRIU's daemon asks, until the last page. */
  relay?: LazyPageRelay;
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
  const feed = await startRelayedDaemon(criu, imagesDir, (pid, vaddr, nr) => prefetch.get(pid, vaddr, nr), source.syscalls, log, () => {
    prefetch.stop();
    log.info({ ...prefetch.stats, fetchMs: Math.round(prefetch.stats.fetchMs) }, 'post-copy prefetch done');
  });
  return { ...feed, prefetch };
}

/**
 * `criu lazy-pages --page-server` on one end of a socket pair, a LazyPageRelay answering it with
 * `fetch` on the other; `after` runs once the relay's session is over, however it ended.
 */
async function startRelayedDaemon(
  criu: CriuDriver,
  imagesDir: string,
  fetch: PageFetcher,
  syscalls: Pick<LinuxSyscalls, 'socketpair' | 'close'>,
  log: Logger,
  after: () => unknown,
): Promise<{ daemon: LazyPagesDaemon; relay: LazyPageRelay }> {
  const [criuFd, relayFd] = syscalls.socketpair();
  const relay = LazyPageRelay.start(fetch, log, new Socket({ fd: relayFd, readable: true, writable: true }));
  relay.done.finally(after).catch(() => undefined);
  try {
    const daemon = await LazyPagesDaemon.start(criu, imagesDir, { socketFd: criuFd, relay: true });
    return { daemon, relay };
  } catch (err) {
    relay.stop('the lazy-pages daemon did not start');
    throw err;
  } finally {
    // The daemon holds its own copy: with ours closed, its exit ends the relay's session.
    syscalls.close(criuFd);
  }
}

/** Reads a task's lazy pages from this host's files (page-delta.ts LocalLazyPages). */
export interface LocalPageSource {
  read(pid: number, vaddr: number, nr: number): Promise<{ vaddr: number; nr: number; data: Buffer }>;
  close(): Promise<void>;
}

/**
 * Starts the daemon for a lazy restore of pre-copied memory: a relay on the other end of its socket
 * pair answers it from the rebuilt image's files on this host (CRIU's daemon cannot read the
 * parent image those point into itself; page-delta.ts).
 */
export async function startLocalRelayedMemory(
  criu: CriuDriver,
  imagesDir: string,
  pages: LocalPageSource,
  syscalls: Pick<LinuxSyscalls, 'socketpair' | 'close'>,
  log: Logger,
): Promise<LazyMemoryFeed> {
  return startRelayedDaemon(criu, imagesDir, (pid, vaddr, nr) => pages.read(pid, vaddr, nr), syscalls, log, () => pages.close());
}
