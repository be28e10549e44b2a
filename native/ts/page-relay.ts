/**
 * Post-copy's page pull on the target (src/page-relay.h): between `criu lazy-pages --page-server`
 * and the source's page server, fetching the runs the daemon will ask for next, a window ahead.
 */
import { types } from 'node:util';
import { withCancelFd } from './cancel-fd';
import { SyscallArgumentError } from './errors';
import type { NativeBinding, PageRelayResult } from './native-binding';
import { checkProtocol, packRunsTable, type LazyServeProtocol } from './page-delta';
import { checkFd, checkIntegerIn } from './validate';

/** Most runs one relay's plan holds (src/page-relay.h has the same). */
export const PAGE_RELAY_MAX_RUNS = 1 << 22;
/** Most pages one relay's plan holds in all: 16 GiB (src/page-relay.h has the same). */
export const PAGE_RELAY_MAX_PAGES = 1 << 22;
/** Bytes of one run in a relay's plan: (task, vaddr, pages), u64 little-endian each. */
export const PAGE_RELAY_RUN_BYTES = 24;

/** `pages` pages of task `task` (CRIU's dst_id: its pid) from `vaddr`, lazy on the source. */
export interface PageRelayRun {
  task: number;
  vaddr: number;
  pages: number;
}

export interface PageRelayOptions {
  /** Pages per fetch ahead, 1..1024. */
  chunkPages: number;
  /** Most fetches ahead unanswered at once, 0..64 (0: every request passed on, nothing fetched ahead). */
  window: number;
  /** Most bytes fetched ahead and not yet taken by the daemon, in flight included (at most 1 GiB). */
  cacheBytes: number;
  /** Fetch nothing ahead until the daemon asks for a run of more than a page (its background transfer, after the restore). */
  waitForBackground: boolean;
  /** Stops it with a SyscallError 'ECANCELED' (both sockets stay open: the caller closes them). */
  signal?: AbortSignal;
}

/** Packs runs (sorted by task, then vaddr, not overlapping; numbers below 2^53) as a relay's plan. */
export function packPageRelayRuns(runs: readonly PageRelayRun[]): Uint8Array {
  return packRunsTable('pageRelay', PAGE_RELAY_MAX_RUNS, runs.map((run) => [run.task, run.vaddr, run.pages]));
}

/** Implements LinuxSyscalls.pageRelay (see there). */
export async function pageRelay(
  native: () => NativeBinding,
  daemonFd: number,
  upstreamFd: number,
  runs: Uint8Array,
  protocol: LazyServeProtocol,
  options: PageRelayOptions,
): Promise<PageRelayResult> {
  const syscall = 'pageRelay';
  if (!types.isUint8Array(runs) || runs.byteLength % PAGE_RELAY_RUN_BYTES !== 0) {
    throw new SyscallArgumentError(syscall, 'runs', `must be a table of ${PAGE_RELAY_RUN_BYTES}-byte runs (packPageRelayRuns)`);
  }
  const fds = [checkFd(syscall, 'daemonFd', daemonFd), checkFd(syscall, 'upstreamFd', upstreamFd)] as const;
  const cmds = checkProtocol(syscall, protocol);
  const chunkPages = checkIntegerIn(syscall, 'chunkPages', options.chunkPages, 1, 1024);
  const window = checkIntegerIn(syscall, 'window', options.window, 0, 64);
  const cacheBytes = checkIntegerIn(syscall, 'cacheBytes', options.cacheBytes, 0, 2 ** 30);
  if (typeof options.waitForBackground !== 'boolean') throw new SyscallArgumentError(syscall, 'waitForBackground', 'must be a boolean');
  return withCancelFd(native, syscall, options.signal, (cancelFd) =>
    native().pageRelay(fds[0], fds[1], runs, cancelFd, ...cmds, chunkPages, window, cacheBytes, options.waitForBackground),
  );
}
