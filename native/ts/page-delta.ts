import { types } from 'node:util';

import { withCancelFd } from './cancel-fd';
import { SyscallArgumentError } from './errors';
import { loadNativeBinding, type LazyServeResult, type NativeBinding, type NativePageIndex, type PageDeltaCounts, type PrecopyReadResult } from './native-binding';
import { checkFd, checkIntegerIn, checkPid } from './validate';

// The pre-copy's mechanics: precopyRead copies a live process's memory and hashes its pages,
// buildPageIndex indexes those hashes, and dedupPages rewrites CRIU's pages image as a page delta
// that refers to pre-copied pages instead of repeating them. What to read, and when, is the
// caller's policy. The delta's format is below, and in src/page-delta.h.

/** A memory page, the unit of everything here. */
export const PAGE_DELTA_PAGE_BYTES = 4096;
/** A page's hash: XXH3-128 of its 4096 bytes, low 64 bits little-endian then high 64 bits little-endian. */
export const PAGE_HASH_BYTES = 16;

/**
 * The page delta, all integers little-endian: the 8-byte magic ("FRYDELT1"; a shared Buffer, never
 * write to it), then records. Each record is a 16-byte head of four u32 (op, a, b, c):
 * - LITERAL: a = n pages (1 .. PAGE_DELTA_MAX_LITERAL_PAGES), b = c = 0; then n * 4096 bytes.
 * - REF: a = pre-copy file index (its position in buildPageIndex's array), b = first page in that
 *   file, c = n pages (>= 1): the next n pages are that file's pages b .. b + n - 1.
 * - TAIL: a = byte count (1 .. 4095), b = c = 0; then those bytes (the input ended inside a
 *   page). Only ever right before END.
 * - END: a = low 32 bits, b = high 32 bits of the decoded file's byte count, c = 0. Always the
 *   last record: a stream without it was cut, and its decoder must refuse it.
 * Consecutive references to consecutive pages of one file are one REF: an unchanged stretch of
 * memory is one record, and its pages keep the addresses they were pre-copied from, which is what
 * lets the target leave them where they are (the agent's migration/page-delta.ts).
 */
export const PAGE_DELTA_MAGIC: Buffer = Buffer.from('FRYDELT1', 'latin1');
export const PAGE_DELTA_HEAD_BYTES = 16;
/** A record head's op. */
export const PAGE_DELTA_OP = Object.freeze({ LITERAL: 1, REF: 2, TAIL: 3, END: 4 } as const);
/** Most pages in one LITERAL record (1 MiB: dedupPages's output buffer). */
export const PAGE_DELTA_MAX_LITERAL_PAGES = 256;

/** Most runs one precopyRead takes (src/precopy-read.h has the same). */
export const PRECOPY_READ_MAX_RUNS = 1 << 20;
/** Largest options.maxBytes, and its default: 64 GiB, whose hash array (256 MiB) is allocated up front. */
export const PRECOPY_READ_MAX_BYTES = 64 * 1024 ** 3;
/** Most pre-copy files in one page index (src/page-index.h has the same). */
export const PAGE_INDEX_MAX_FILES = 65535;
/** Most pages in one pre-copy file of a page index (2^31, 8 TiB). */
export const PAGE_INDEX_MAX_FILE_PAGES = 2 ** 31;

/** How a precopyRead is bounded and stopped. */
export interface PrecopyReadOptions {
  /**
   * Most bytes the runs may add up to (default and maximum PRECOPY_READ_MAX_BYTES): refused
   * before anything is read, since the hash array for all of them is allocated up front.
   */
  maxBytes?: number;
  /**
   * Stops it with a SyscallError 'ECANCELED' as soon as it notices (between two 1 MiB pieces, or
   * while it waits for room in outFd), leaving outFd as it is: its reader sees a short copy. A
   * blocking pipe's full write notices only when that write returns, as the sealed pump's.
   */
  signal?: AbortSignal;
}

/** How a dedupPages is stopped. */
export interface DedupPagesOptions {
  /**
   * Stops it with a SyscallError 'ECANCELED' as soon as it notices, without writing END, so the
   * delta's decoder sees it cut. Blocking pipes as for PrecopyReadOptions.signal.
   */
  signal?: AbortSignal;
}

/**
 * The pre-copy's page index: the hashes of every pre-copied page, by file and by content. Held by
 * the addon (~40 bytes a page) and freed when this object is garbage collected; keep it as long as
 * a dedupPages may need it (a running one holds on to it by itself).
 */
export interface PageIndex {
  /** How many pre-copy files it indexes (file indexes 0 .. files - 1). */
  readonly files: number;
  /** How many pages, all files together. */
  readonly pages: number;
}

/** The addon's handle for each PageIndex this module made: callers see only files and pages. */
const nativeIndexes = new WeakMap<PageIndex, NativePageIndex>();

/**
 * Checks `runs` (u64 little-endian address, length pairs; page-aligned, each at least a page, no
 * run past the top of the address space, at most maxBytes in all) without BigInts: a million runs
 * are checked in a few milliseconds.
 */
function checkRuns(syscall: string, runs: unknown, maxBytes: number): Uint8Array {
  if (!types.isUint8Array(runs)) throw new SyscallArgumentError(syscall, 'runs', 'must be a Uint8Array or Buffer');
  if (runs.byteLength % 16 !== 0) throw new SyscallArgumentError(syscall, 'runs', `must be (address, length) u64 pairs, got ${runs.byteLength} bytes`);
  const count = runs.byteLength / 16;
  if (count > PRECOPY_READ_MAX_RUNS) throw new SyscallArgumentError(syscall, 'runs', `must hold at most ${PRECOPY_READ_MAX_RUNS} runs, got ${count}`);
  const view = new DataView(runs.buffer, runs.byteOffset, runs.byteLength);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const addressLow = view.getUint32(i * 16, true);
    const addressHigh = view.getUint32(i * 16 + 4, true);
    const lengthLow = view.getUint32(i * 16 + 8, true);
    const lengthHigh = view.getUint32(i * 16 + 12, true);
    // lengthHigh < 2^21 keeps the length exact as a number; anything larger is far past maxBytes anyway.
    const length = lengthHigh < 2 ** 21 ? lengthHigh * 2 ** 32 + lengthLow : Infinity;
    if (addressLow % PAGE_DELTA_PAGE_BYTES !== 0 || lengthLow % PAGE_DELTA_PAGE_BYTES !== 0 || length === 0) {
      throw new SyscallArgumentError(syscall, 'runs', `run ${i}: address and length must be multiples of ${PAGE_DELTA_PAGE_BYTES}, length > 0`);
    }
    // Room above the address (2^64 - address): inexact only when far larger than any length here.
    const room = (2 ** 32 - addressHigh) * 2 ** 32 - addressLow;
    total += length;
    if (length > room || total > maxBytes) {
      throw new SyscallArgumentError(syscall, 'runs', `run ${i}: the runs must stay below 2^64 and add up to at most maxBytes (${maxBytes})`);
    }
  }
  return runs;
}

/**
 * Copies `runs` of process `pid`'s memory to `outFd` and hashes every page on the way, on a native
 * thread of its own. Implements LinuxSyscalls.precopyRead (see there).
 */
export async function precopyRead(
  native: () => NativeBinding,
  pid: number,
  runs: Uint8Array,
  outFd: number,
  options: PrecopyReadOptions = {},
): Promise<PrecopyReadResult> {
  const syscall = 'precopyRead';
  const maxBytes = checkIntegerIn(syscall, 'options.maxBytes', options.maxBytes ?? PRECOPY_READ_MAX_BYTES, 0, PRECOPY_READ_MAX_BYTES);
  const args = {
    pid: checkPid(syscall, 'pid', pid),
    runs: checkRuns(syscall, runs, maxBytes),
    outFd: checkFd(syscall, 'outFd', outFd),
  };
  return withCancelFd(native, syscall, options.signal, (cancelFd) => native().precopyRead(args.pid, args.runs, args.outFd, cancelFd, maxBytes));
}

/**
 * Indexes pre-copy files' hash arrays (precopyRead's `hashes`; file index = position in the array).
 * Synchronous, on the calling thread: measured ~14 ms for 262144 pages (a 1 GiB pre-copy) on a
 * 2-core VM, under the 50 ms that would make a worker thread worth its code. It grows a little
 * faster than the page count (~300 ms for 4M pages, 16 GiB): a caller indexing tens of GiB at
 * once should expect that pause of its event loop. Implements LinuxSyscalls.buildPageIndex and
 * buildPageIndex.
 */
export function buildPageIndexWith(native: () => NativeBinding, hashes: readonly Uint8Array[]): PageIndex {
  const syscall = 'buildPageIndex';
  if (!Array.isArray(hashes)) throw new SyscallArgumentError(syscall, 'hashes', 'must be an array of Uint8Arrays');
  if (hashes.length > PAGE_INDEX_MAX_FILES) {
    throw new SyscallArgumentError(syscall, 'hashes', `must hold at most ${PAGE_INDEX_MAX_FILES} files, got ${hashes.length}`);
  }
  let pages = 0;
  hashes.forEach((file: unknown, f) => {
    if (!types.isUint8Array(file)) throw new SyscallArgumentError(syscall, `hashes[${f}]`, 'must be a Uint8Array or Buffer');
    if (file.byteLength % PAGE_HASH_BYTES !== 0 || file.byteLength / PAGE_HASH_BYTES > PAGE_INDEX_MAX_FILE_PAGES) {
      throw new SyscallArgumentError(syscall, `hashes[${f}]`, `must be ${PAGE_HASH_BYTES} bytes a page, at most 2^31 pages, got ${file.byteLength} bytes`);
    }
    pages += file.byteLength / PAGE_HASH_BYTES;
  });
  const handle = native().buildPageIndex([...hashes]);
  const index: PageIndex = Object.freeze({ files: hashes.length, pages });
  nativeIndexes.set(index, handle);
  return index;
}

/**
 * LinuxSyscalls.buildPageIndex without a LinuxSyscalls: it makes no syscall, so code that only
 * builds an index (and hands it to a LinuxSyscalls' dedupPages, real or fake) needs none.
 */
export function buildPageIndex(hashes: readonly Uint8Array[]): PageIndex {
  return buildPageIndexWith(loadNativeBinding, hashes);
}

/**
 * Rewrites the pages image read from `inFd` as a page delta written to `outFd`, on a native
 * thread of its own. Implements LinuxSyscalls.dedupPages (see there).
 */
export async function dedupPages(
  native: () => NativeBinding,
  index: PageIndex,
  inFd: number,
  outFd: number,
  options: DedupPagesOptions = {},
): Promise<PageDeltaCounts> {
  const syscall = 'dedupPages';
  const handle = typeof index === 'object' && index !== null ? nativeIndexes.get(index) : undefined;
  if (handle === undefined) throw new SyscallArgumentError(syscall, 'index', 'must be a PageIndex from buildPageIndex');
  const args = { inFd: checkFd(syscall, 'inFd', inFd), outFd: checkFd(syscall, 'outFd', outFd) };
  return withCancelFd(native, syscall, options.signal, (cancelFd) => native().dedupPages(handle, args.inFd, args.outFd, cancelFd));
}

/** Most runs one lazyServe table holds (src/lazy-serve.h has the same). */
export const LAZY_SERVE_MAX_RUNS = 1 << 22;
/** Bytes of one run in lazyServe's table: (task, vaddr, pages, file, offset), u64 little-endian each. */
export const LAZY_SERVE_RUN_BYTES = 40;

/** `pages` pages of task `task` (CRIU's dst_id: its pid) from `vaddr` lie in `files[file]` from byte `offset`. */
export interface LazyServeRun {
  task: number;
  vaddr: number;
  pages: number;
  file: number;
  offset: number;
}

/** CRIU's page-server command numbers lazyServe speaks (the agent's criu-page-protocol.ts). */
export interface LazyServeProtocol {
  /** Bits of a command that name it (the rest are flags). */
  cmdMask: number;
  /** A daemon's request for pages. */
  getCmd: number;
  /** The command of the header before the pages of an answer. */
  replyCmd: number;
  /** The daemon has every page (answered with a 4-byte status 0: the session ends). */
  closeCmd: number;
  forceCloseCmd: number;
}

/** How a lazyServe is stopped. */
export interface LazyServeOptions {
  /** Stops it with a SyscallError 'ECANCELED' (the daemon then sees its page server go away). */
  signal?: AbortSignal;
}

/** Packs runs (sorted by task, then vaddr, not overlapping; numbers below 2^53) as lazyServe's table. */
export function packLazyServeRuns(runs: readonly LazyServeRun[]): Uint8Array {
  return packRunsTable('lazyServe', LAZY_SERVE_MAX_RUNS, runs.map((run) => [run.task, run.vaddr, run.pages, run.file, run.offset]));
}

/**
 * A native runs table (lazyServe's, pageRelay's): each row's fields as u64 little-endian, rows
 * back to back. At most `maxRuns` rows, every field an integer in [0, 2^53).
 */
export function packRunsTable(syscall: string, maxRuns: number, rows: readonly (readonly number[])[]): Uint8Array {
  if (rows.length > maxRuns) throw new SyscallArgumentError(syscall, 'runs', `must hold at most ${maxRuns} runs, got ${rows.length}`);
  const rowBytes = (rows[0]?.length ?? 0) * 8;
  const table = Buffer.alloc(rows.length * rowBytes);
  rows.forEach((row, i) => {
    for (const [k, value] of row.entries()) {
      if (!Number.isSafeInteger(value) || value < 0) throw new SyscallArgumentError(syscall, `runs[${i}]`, 'must hold integers in [0, 2^53)');
      table.writeBigUInt64LE(BigInt(value), i * rowBytes + k * 8);
    }
  });
  return table;
}

/** The protocol's five command numbers, each checked as a u32, in the order the native calls take them. */
export function checkProtocol(syscall: string, protocol: LazyServeProtocol): [number, number, number, number, number] {
  const [mask, get, reply, close, forceClose] = (['cmdMask', 'getCmd', 'replyCmd', 'closeCmd', 'forceCloseCmd'] as const).map((name) =>
    checkIntegerIn(syscall, `protocol.${name}`, protocol[name], 0, 2 ** 32 - 1),
  );
  return [mask!, get!, reply!, close!, forceClose!];
}

/**
 * Serves one session of `criu lazy-pages --page-server` on `sockFd` from `files` by the `runs`
 * table (packLazyServeRuns), on a native thread of its own, with sendfile(2): no page passes
 * through user memory. Implements LinuxSyscalls.lazyServe (see there).
 */
export async function lazyServe(
  native: () => NativeBinding,
  sockFd: number,
  runs: Uint8Array,
  files: readonly number[],
  protocol: LazyServeProtocol,
  options: LazyServeOptions = {},
): Promise<LazyServeResult> {
  const syscall = 'lazyServe';
  if (!types.isUint8Array(runs) || runs.byteLength % LAZY_SERVE_RUN_BYTES !== 0) {
    throw new SyscallArgumentError(syscall, 'runs', `must be a table of ${LAZY_SERVE_RUN_BYTES}-byte runs (packLazyServeRuns)`);
  }
  if (!Array.isArray(files)) throw new SyscallArgumentError(syscall, 'files', 'must be an array of descriptors');
  const fds = files.map((fd, f) => checkFd(syscall, `files[${f}]`, fd));
  const fd = checkFd(syscall, 'sockFd', sockFd);
  const cmds = checkProtocol(syscall, protocol);
  return withCancelFd(native, syscall, options.signal, (cancelFd) => native().lazyServe(fd, runs, fds, cancelFd, ...cmds));
}
