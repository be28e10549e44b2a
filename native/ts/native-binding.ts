import * as path from 'node:path';

/** Which way a sealed pump runs: 'seal' reads plaintext and writes frames, 'open' the reverse. */
export type SealedPumpMode = 'seal' | 'open';

/** What a sealed pump moved, once its stream has ended. */
export interface SealedPumpCounts {
  /** seal: plaintext bytes read; open: frame bytes read (headers and tags included). */
  bytesIn: number;
  /** seal: frame bytes written (headers, tags and the end frame included); open: plaintext bytes written. */
  bytesOut: number;
  /** Frames written (seal) or verified (open), the end frame included. */
  frames: number;
}

/** What precopyRead copied, once every run is written. */
export interface PrecopyReadResult {
  /** 16 bytes per page written, in order (XXH3-128: low 64 bits little-endian, then high 64 bits). */
  hashes: Buffer;
  /** Bytes written to outFd: the runs' total (hashes.length / 16 * 4096). */
  bytes: number;
  /** Of those, bytes that could not be read (unmapped since listed) and went out as zeros. */
  unreadableBytes: number;
}

/** What lazyServe answered, once the daemon closed its session. */
export interface LazyServeResult {
  /** Page requests answered. */
  requests: number;
  /** Pages sent in all. */
  pages: number;
}

/** What pageRelay did, once the daemon closed its session. */
export interface PageRelayResult {
  /** The daemon's requests answered. */
  requests: number;
  /** Of those, answered from pages fetched ahead. */
  hits: number;
  /** Pages sent to the daemon. */
  pages: number;
  /** Pages fetched ahead of the daemon. */
  prefetchedPages: number;
  /** Pages fetched ahead that the daemon never took. */
  unusedPages: number;
}

/** What dedupPages moved, once its input has ended and END is written. */
export interface PageDeltaCounts {
  /** Pages image bytes read (the total END carries). */
  bytesIn: number;
  /** Page delta bytes written: magic, record heads, literal pages, tail. */
  bytesOut: number;
  /** Input pages that went out as literal content. */
  literalPages: number;
  /** Input pages that went out as references to pre-copied pages. */
  refPages: number;
}

/** The addon's handle on a page index (an External holding the C++ index); opaque here. */
export type NativePageIndex = { readonly __brand: 'NativePageIndex' };

/** What one recvWithFds call received. */
export interface ReceivedWithFds {
  /** The bytes read, 1 .. maxBytes of them; none at end of stream. */
  bytes: Buffer;
  /** The descriptors that came with them (SCM_RIGHTS), close-on-exec; each one is the caller's to close. */
  fds: number[];
}

/**
 * The raw addon, exactly as src/*.cc exports it. Nothing here validates arguments or converts
 * errors; use createLinuxSyscalls() instead. Every function throws (or rejects with) an Error
 * carrying `errno`, `code` and `syscall` when the kernel refuses the call.
 */
export interface NativeBinding {
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  umount2(target: string, flags: number): Promise<void>;
  pidfdOpen(pid: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  close(fd: number): void;
  lseek(fd: number, offset: number, whence: number): number;
  setsockoptInt(fd: number, level: number, optname: number, value: number): void;
  socketpair(): [number, number];
  shutdown(fd: number, how: number): void;
  /** One recvmsg(2) with SCM_RIGHTS on libuv's pool (sockets.cc); waits in poll(2) on EAGAIN. */
  recvWithFds(fd: number, maxBytes: number, maxFds: number): Promise<ReceivedWithFds>;
  /** fcntl(F_SETPIPE_SZ); returns the capacity the kernel set. */
  setPipeSize(fd: number, bytes: number): number;
  /**
   * Runs on a thread of its own; the Promise settles when the stream has ended or failed.
   * `cancelFd` (-1: none) stops it with ECANCELED once it becomes readable.
   */
  sealedPump(
    inFd: number,
    outFd: number,
    mode: SealedPumpMode,
    key: Uint8Array,
    noncePrefix: Uint8Array,
    frameBytes: number,
    shutdownOut: boolean,
    cancelFd: number,
    maxOutBytes: number,
  ): Promise<SealedPumpCounts>;

  /** process_vm_readv(2) of `runs` (u64 LE address, length pairs) into outFd on a thread of its own (page-delta-binding.cc). */
  precopyRead(pid: number, runs: Uint8Array, outFd: number, cancelFd: number, maxBytes: number): Promise<PrecopyReadResult>;
  /** Copies the hash arrays and sorts them, on the calling thread; freed by the GC. */
  buildPageIndex(hashes: Uint8Array[]): NativePageIndex;
  /** Filters a pages image into a page delta on a thread of its own; `cancelFd` as sealedPump's. */
  dedupPages(index: NativePageIndex, inFd: number, outFd: number, cancelFd: number): Promise<PageDeltaCounts>;
  /** Answers a lazy-pages daemon's requests on sockFd from `files` by the runs table, on a thread of its own (lazy-serve.cc). */
  lazyServe(
    sockFd: number,
    runs: Uint8Array,
    files: number[],
    cancelFd: number,
    cmdMask: number,
    getCmd: number,
    replyCmd: number,
    closeCmd: number,
    forceCloseCmd: number,
  ): Promise<LazyServeResult>;
  /** Relays a lazy-pages daemon's requests to the source's page server, fetching ahead, on a thread of its own (page-relay.cc). */
  pageRelay(
    daemonFd: number,
    upstreamFd: number,
    runs: Uint8Array,
    cancelFd: number,
    cmdMask: number,
    getCmd: number,
    replyCmd: number,
    closeCmd: number,
    forceCloseCmd: number,
    chunkPages: number,
    window: number,
    cacheBytes: number,
    waitForBackground: boolean,
  ): Promise<PageRelayResult>;

  unreadBytes(fd: number): number;
  /** AES-256-GCM over `data` in place (aead.cc); open returns false for a bad tag. */
  aeadInPlace(seal: boolean, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, data: Uint8Array, tag: Uint8Array): boolean;

  readonly SEEK_SET: number;
  readonly IPPROTO_TCP: number;
  readonly TCP_REPAIR: number;
  readonly SHUT_RD: number;
  readonly SHUT_WR: number;
  readonly SHUT_RDWR: number;
  readonly SEEK_CUR: number;
  readonly SEEK_END: number;
  readonly MS_RDONLY: number;
  readonly MS_NOSUID: number;
  readonly MS_NODEV: number;
  readonly MS_NOEXEC: number;
  readonly MS_REMOUNT: number;
  readonly MS_BIND: number;
  readonly MS_REC: number;
  readonly MS_PRIVATE: number;
  readonly MS_SLAVE: number;
  readonly MS_SHARED: number;
  readonly MNT_FORCE: number;
  readonly MNT_DETACH: number;
  readonly UMOUNT_NOFOLLOW: number;
}

/**
 * Where node-gyp puts the addon. Resolved from the package root (one level above both ts/ and
 * dist/), so the same code works compiled and under ts-jest.
 */
export const NATIVE_ADDON_PATH = path.resolve(__dirname, '..', 'build', 'Release', 'ferry_native.node');

let cached: NativeBinding | undefined;

/**
 * Loads the addon once. Loading is deferred to the first call so that importing @ferry/native
 * (for its types, constants or errors) works before the addon has been compiled.
 */
export function loadNativeBinding(): NativeBinding {
  if (cached === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a compiled .node addon, found at run time, loads only through require()
      cached = require(NATIVE_ADDON_PATH) as NativeBinding;
    } catch (err) {
      throw new Error(`cannot load ${NATIVE_ADDON_PATH}; build it with 'npm run build -w @ferry/native'`, {
        cause: err,
      });
    }
  }
  return cached;
}
