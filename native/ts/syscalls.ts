import { SHUT_RD, SHUT_RDWR } from './constants';
import { SyscallArgumentError, fromNativeError } from './errors';
import {
  loadNativeBinding,
  type NativeBinding,
  type LazyServeResult,
  type PageRelayResult,
  type PageDeltaCounts,
  type PrecopyReadResult,
  type ReceivedWithFds,
  type SealedPumpCounts,
  type SealedPumpMode,
} from './native-binding';
import {
  buildPageIndexWith,
  dedupPages,
  lazyServe,
  precopyRead,
  type DedupPagesOptions,
  type LazyServeOptions,
  type LazyServeProtocol,
  type PageIndex,
  type PrecopyReadOptions,
} from './page-delta';
import { pageRelay, type PageRelayOptions } from './page-relay';
import { sealedPump, type SealedPumpOptions } from './sealed-pump';
import { checkAbsolutePath, checkFd, checkIntFlags, checkIntegerIn, checkNullableCString, checkPid, checkUintFlags } from './validate';

/** Most bytes one recvWithFds call reads: the buffer each call allocates (src/sockets.cc has the same). */
export const RECV_WITH_FDS_MAX_BYTES = 1024 * 1024;
/** Most descriptors one recvWithFds call takes: the room in its control message (src/sockets.cc has the same). */
export const RECV_WITH_FDS_MAX_FDS = 64;

/**
 * The Linux syscalls ferry needs and Node lacks. Callers depend on this interface, never on the
 * addon, so tests can substitute a fake. Every method validates its arguments first (throwing
 * SyscallArgumentError without calling the kernel) and reports kernel refusals as SyscallError.
 */
export interface LinuxSyscalls {
  /** mount(2), off the event loop. `source`/`fstype`/`data` may be null (e.g. propagation changes). */
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  /** umount2(2), off the event loop. */
  umount2(target: string, flags: number): Promise<void>;
  /** pidfd_open(2): a descriptor that keeps referring to this process even after its PID is reused. */
  pidfdOpen(pid: number): number;
  /** pidfd_getfd(2): duplicate the target process's descriptor `targetFd` into this process. */
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /** close(2). */
  close(fd: number): void;
  /** lseek(2): sets a descriptor's offset (e.g. a reopened file's, before CRIU inherits it); returns the new offset. */
  lseek(fd: number, offset: number, whence: number): number;
  /** ioctl(FIONREAD): bytes waiting to be read in a pipe, FIFO or socket, without reading them. */
  unreadBytes(fd: number): number;
  /**
   * fcntl(F_SETPIPE_SZ): sets a pipe's (or FIFO's) capacity to at least `bytes` (>= 1) and returns
   * the capacity the kernel set (rounded up to a power-of-two number of pages). E.g. the pipe CRIU
   * streams an image into, so it waits for its reader less often. Kernel refusals, as SyscallError
   * with syscall 'fcntl': 'EPERM' above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE (which
   * root lacks on ferry's VMs), or past the user's pipe-user-pages limits; 'EBUSY' below what the
   * pipe holds now; 'EBADF' for a descriptor that is not a pipe.
   */
  setPipeSize(fd: number, bytes: number): number;
  /** setsockopt(2) with an int value (e.g. IPPROTO_TCP, TCP_REPAIR, 0: a socket CRIU left in repair mode back to normal). */
  setsockoptInt(fd: number, level: number, optname: number, value: number): void;
  /**
   * socketpair(2): a connected AF_UNIX SOCK_STREAM pair, both ends close-on-exec (a child given one
   * through spawn's stdio gets it dup2()ed, which clears close-on-exec on its copy only). Blocking
   * fds: for a sealed pump or a child, not for net.Socket's event loop until it sets O_NONBLOCK itself.
   */
  socketpair(): [number, number];
  /** shutdown(2), `how` one of SHUT_RD, SHUT_WR, SHUT_RDWR. */
  shutdown(fd: number, how: number): void;
  /**
   * One recvmsg(2) on a connected AF_UNIX stream socket, off the event loop: bytes, and the
   * descriptors the peer sent with them (SCM_RIGHTS), installed close-on-exec. Resolves as soon as
   * anything has arrived, with 1 .. `maxBytes` (at most RECV_WITH_FDS_MAX_BYTES) bytes; with no
   * bytes at end of stream: the peer closed or shut down its writing, or this socket was shut down
   * for reading, which is how to stop a pending call: shutdown(fd, SHUT_RD), never close(fd) (its
   * number could be reused under the call). The stream keeps no message boundaries, except that
   * descriptors come with the read that returns the first byte sent with them, and that read ends
   * at the last of those bytes at the latest. Every descriptor in `fds` is the caller's to close.
   *
   * More than `maxFds` (1 .. RECV_WITH_FDS_MAX_FDS) descriptors at once: every one that arrived is
   * closed and it rejects with 'EMSGSIZE'; the bytes sent with them are consumed too, so the stream
   * is out of step and should be closed.
   *
   * fd may be blocking or not (a net.Socket's, taken over with socketFd): it waits in poll(2) and
   * leaves the fd's O_NONBLOCK as it is. While it waits it holds one of libuv's pool threads (4 by
   * default, shared with fs): at most one pending call per socket, which is also what keeps the
   * reads in order. Rejects with a SyscallError: 'EMSGSIZE' as above, or the errno of recvmsg or
   * poll with that call as `syscall` (e.g. 'ENOTSOCK', 'EBADF').
   */
  recvWithFds(fd: number, maxBytes: number, maxFds: number): Promise<ReceivedWithFds>;
  /**
   * Moves a byte stream from `inFd` to `outFd` through AES-256-GCM on a native thread of its own
   * (not libuv's pool): no JavaScript runs per byte. 'seal' reads plaintext and writes frames;
   * 'open' reads frames, verifies each one before writing any of its plaintext, and writes the
   * plaintext. Resolves with the counts once the stream has ended: 'seal' at end of input (after
   * writing the end frame), 'open' at the authenticated end frame (it reads nothing past it).
   *
   * Wire format, frame after frame: a 4-byte big-endian plaintext length L (at most frameBytes),
   * L bytes of ciphertext, a 16-byte GCM tag. L = 0 is the end frame; its tag makes a stream cut
   * short by the network or an attacker an error rather than an early end. The 12-byte nonce is
   * `noncePrefix` (4 bytes) followed by the 64-bit big-endian frame counter, from 0; the additional
   * authenticated data is the length header followed by that counter.
   *
   * A (key, noncePrefix) pair must seal one stream only: a nonce used twice under one key gives
   * away GCM's authenticity and the XOR of the two plaintexts. So the two directions of a tunnel
   * sharing a key take different prefixes, and a key is never reused for a second tunnel.
   * frameBytes (4 KiB .. 16 MiB, e.g. 1 MiB) must be the same on both ends: the opener refuses a
   * frame that claims more, before reading it. A seal frame is as full as the input allows without
   * waiting: bytes that have arrived are never held back to fill one.
   *
   * fds may be blocking or not (Node's sockets are non-blocking); neither is closed. While a pump
   * runs, nothing else may read its inFd or write its outFd (see socketFd for Node sockets), and
   * neither may be closed (the number could be reused under it): close both only after the Promise
   * settled. Stop it early with `options.signal`. shutdown(2) of its sockets stops it too, but a
   * seal pump takes the end of its input for an orderly end and writes an authenticated end frame:
   * shut its outFd first, or better use the signal.
   *
   * Rejects with a SyscallError: 'EBADMSG' (a frame failed authentication: wrong key or prefix,
   * or altered data; nothing of that frame was written), 'EPIPE' with syscall 'sealedPump' (the
   * input ended before the end frame: the stream was cut), 'EMSGSIZE' (a frame header claims more
   * than frameBytes), 'EFBIG' (the stream went past options.maxOutBytes), 'ECANCELED' (stopped
   * through `options.signal`), 'ENOTSOCK' with syscall 'shutdown' (shutdownOut with an outFd that
   * is not a socket, before any byte moved), or the errno
   * of a failed fstat/read/recv/write/send/poll/shutdown with that call as `syscall`.
   */
  sealedPump(
    inFd: number,
    outFd: number,
    mode: SealedPumpMode,
    key: Uint8Array,
    noncePrefix: Uint8Array,
    frameBytes: number,
    options?: SealedPumpOptions,
  ): Promise<SealedPumpCounts>;
  /**
   * Copies `runs` of process `pid`'s memory (a Buffer of little-endian u64 pairs: address, length;
   * both multiples of 4096, length > 0; at most PRECOPY_READ_MAX_RUNS runs and options.maxBytes in
   * all) to `outFd`, in order, with process_vm_readv(2) in pieces of up to 1 MiB, on a native
   * thread of its own, and hashes every 4 KiB page it writes. Needs ptrace rights over `pid` (root).
   * Resolves once everything is written with `hashes` (PAGE_HASH_BYTES per page, in order, so
   * hashes.length / 16 * 4096 === bytes), `bytes`, and `unreadableBytes`: a page that could not be
   * read (unmapped or remapped since the runs were listed) goes out as zeros, and is hashed as
   * zeros, so the hashes always describe exactly the bytes written.
   *
   * outFd (a pipe, a file; blocking or not) is neither closed nor shut down: the caller ends the
   * stream once this has settled. Rejects with a SyscallError: 'ESRCH' with syscall
   * 'process_vm_readv' (the process is gone, exited or a zombie), 'EPERM' (no ptrace rights),
   * 'ECANCELED' (options.signal), 'ENOMEM' (the hash array), or a failed fstat/write/poll's errno
   * with that call as `syscall` (e.g. 'EPIPE': outFd's reader went away).
   */
  precopyRead(pid: number, runs: Uint8Array, outFd: number, options?: PrecopyReadOptions): Promise<PrecopyReadResult>;
  /**
   * Indexes pre-copy files by content: `hashes[f]` is precopyRead's `hashes` for pre-copy file f
   * (at most PAGE_INDEX_MAX_FILES files, PAGE_INDEX_MAX_FILE_PAGES pages each). The hashes are
   * copied. Synchronous (~14 ms for 262144 pages). The index lives in the addon (~40 bytes a
   * page) until the returned object is garbage collected. Also exported alone as buildPageIndex.
   */
  buildPageIndex(hashes: readonly Uint8Array[]): PageIndex;
  /**
   * Reads a CRIU pages image (4 KiB pages back to back) from `inFd` to its end and writes it to
   * `outFd` as a page delta (format: PAGE_DELTA_MAGIC), on a native thread of its own: each page
   * whose hash `index` holds becomes a reference to a pre-copied page with that content, every
   * other page goes out literally. References prefer the location as far past the previous
   * reference as the input has moved since (literal pages in between replaced pages of the run),
   * then the page right after the previous reference, then the same file at or after that page
   * (before any reference: any file, at or after the input position), then any page with that
   * content; consecutive ones merge into one REF record, so an unchanged stretch of memory is one
   * "identity" run the target can rebuild in place, even through repeated content (zero pages).
   *
   * Resolves once END is written, with the counts. END is written only after the whole input was
   * read: a failure or a stop leaves the delta cut, which its decoder refuses. Neither fd is closed.
   * Rejects with a SyscallError: 'ECANCELED' (options.signal), or a failed fstat/read/recv/write/
   * send/poll's errno with that call as `syscall`.
   */
  dedupPages(index: PageIndex, inFd: number, outFd: number, options?: DedupPagesOptions): Promise<PageDeltaCounts>;
  /**
   * Answers `criu lazy-pages --page-server`'s requests on `sockFd` (its socket pair's other end)
   * from `files`, by `runs` (packLazyServeRuns: where each task's pages lie), on a native thread
   * of its own, sending each run's pages with sendfile(2). A request the table has no page for, a
   * command the protocol does not name, or a file that ends early fails it; the daemon's close is
   * answered and resolves it with the counts. Neither sockFd nor the files are closed.
   * Rejects with a SyscallError: 'ECANCELED' (options.signal), 'ENOENT'/'EPROTO'/'EIO'/'EPIPE' with
   * `syscall` 'lazyServe' for the above, or a failed recv/send/sendfile/poll's errno.
   */
  lazyServe(sockFd: number, runs: Uint8Array, files: readonly number[], protocol: LazyServeProtocol, options?: LazyServeOptions): Promise<LazyServeResult>;
  /**
   * Post-copy's pull: relays `criu lazy-pages --page-server`'s requests on `daemonFd` to the
   * source's page server on `upstreamFd` (the page tunnel's local end), on a native thread of its
   * own, and asks the source ahead for `runs` (packPageRelayRuns: each task's lazy runs, in the
   * order the daemon takes them) a window at a time, answering the daemon from what came. A
   * request nothing was fetched for is passed on. The daemon's close is passed on once nothing is in
   * flight, the source's status goes back, and it resolves with the counts. Neither fd is closed.
   * Rejects with a SyscallError: 'ECANCELED' (options.signal); 'EPROTO' with `syscall` 'pageRelay'
   * for a command or answer the protocol does not allow (an answer for other pages than asked, more
   * pages than asked, a request beyond 2^16 pages); 'EPIPE' for a peer gone mid-session; or a failed
   * recv/send/poll's errno.
   */
  pageRelay(daemonFd: number, upstreamFd: number, runs: Uint8Array, protocol: LazyServeProtocol, options: PageRelayOptions): Promise<PageRelayResult>;
}

function callSync<T>(call: () => T, context: { path?: string; dest?: string } = {}): T {
  try {
    return call();
  } catch (err) {
    throw fromNativeError(err, context);
  }
}

async function callAsync<T>(call: () => Promise<T>, context: { path?: string; dest?: string } = {}): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw fromNativeError(err, context);
  }
}

/**
 * The real implementation, backed by the ferry_native addon (loaded on first use unless a
 * binding is given).
 */
export function createLinuxSyscalls(binding?: NativeBinding): LinuxSyscalls {
  const native = (): NativeBinding => binding ?? loadNativeBinding();
  return {
    async mount(source, target, fstype, flags, data) {
      const args = {
        source: checkNullableCString('mount', 'source', source),
        target: checkAbsolutePath('mount', 'target', target),
        fstype: checkNullableCString('mount', 'fstype', fstype),
        flags: checkUintFlags('mount', 'flags', flags),
        data: checkNullableCString('mount', 'data', data),
      };
      await callAsync(() => native().mount(args.source, args.target, args.fstype, args.flags, args.data), {
        path: args.source ?? undefined,
        dest: args.target,
      });
    },

    async umount2(target, flags) {
      const checkedTarget = checkAbsolutePath('umount2', 'target', target);
      const checkedFlags = checkIntFlags('umount2', 'flags', flags);
      await callAsync(() => native().umount2(checkedTarget, checkedFlags), { path: checkedTarget });
    },

    pidfdOpen(pid) {
      const checkedPid = checkPid('pidfd_open', 'pid', pid);
      return callSync(() => native().pidfdOpen(checkedPid));
    },

    pidfdGetfd(pidfd, targetFd) {
      const checkedPidfd = checkFd('pidfd_getfd', 'pidfd', pidfd);
      const checkedTargetFd = checkFd('pidfd_getfd', 'targetFd', targetFd);
      return callSync(() => native().pidfdGetfd(checkedPidfd, checkedTargetFd));
    },

    close(fd) {
      const checkedFd = checkFd('close', 'fd', fd);
      callSync(() => native().close(checkedFd));
    },

    lseek(fd, offset, whence) {
      const checkedFd = checkFd('lseek', 'fd', fd);
      if (!Number.isSafeInteger(offset)) throw new SyscallArgumentError('lseek', 'offset', 'must be a safe integer');
      const checkedWhence = checkIntFlags('lseek', 'whence', whence);
      return callSync(() => native().lseek(checkedFd, offset, checkedWhence));
    },

    unreadBytes(fd) {
      const checkedFd = checkFd('ioctl', 'fd', fd);
      return callSync(() => native().unreadBytes(checkedFd));
    },

    setPipeSize(fd, bytes) {
      const checkedFd = checkFd('fcntl', 'fd', fd);
      const checkedBytes = checkIntegerIn('fcntl', 'bytes', bytes, 1, 0x7fffffff);
      return callSync(() => native().setPipeSize(checkedFd, checkedBytes));
    },

    setsockoptInt(fd, level, optname, value) {
      const checkedFd = checkFd('setsockopt', 'fd', fd);
      const checkedLevel = checkIntFlags('setsockopt', 'level', level);
      const checkedOptname = checkIntFlags('setsockopt', 'optname', optname);
      if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
        throw new SyscallArgumentError('setsockopt', 'value', 'must be a 32-bit integer');
      }
      callSync(() => native().setsockoptInt(checkedFd, checkedLevel, checkedOptname, value));
    },

    socketpair() {
      return callSync(() => native().socketpair());
    },

    shutdown(fd, how) {
      const checkedFd = checkFd('shutdown', 'fd', fd);
      const checkedHow = checkIntegerIn('shutdown', 'how', how, SHUT_RD, SHUT_RDWR);
      callSync(() => native().shutdown(checkedFd, checkedHow));
    },

    async recvWithFds(fd, maxBytes, maxFds) {
      const checkedFd = checkFd('recvmsg', 'fd', fd);
      const checkedMaxBytes = checkIntegerIn('recvmsg', 'maxBytes', maxBytes, 1, RECV_WITH_FDS_MAX_BYTES);
      const checkedMaxFds = checkIntegerIn('recvmsg', 'maxFds', maxFds, 1, RECV_WITH_FDS_MAX_FDS);
      return callAsync(() => native().recvWithFds(checkedFd, checkedMaxBytes, checkedMaxFds));
    },

    sealedPump(inFd, outFd, mode, key, noncePrefix, frameBytes, options) {
      return sealedPump(native, inFd, outFd, mode, key, noncePrefix, frameBytes, options);
    },

    precopyRead(pid, runs, outFd, options) {
      return precopyRead(native, pid, runs, outFd, options);
    },

    buildPageIndex(hashes) {
      return buildPageIndexWith(native, hashes);
    },

    dedupPages(index, inFd, outFd, options) {
      return dedupPages(native, index, inFd, outFd, options);
    },

    lazyServe(sockFd, runs, files, protocol, options) {
      return lazyServe(native, sockFd, runs, files, protocol, options);
    },

    pageRelay(daemonFd, upstreamFd, runs, protocol, options) {
      return pageRelay(native, daemonFd, upstreamFd, runs, protocol, options);
    },
  };
}
