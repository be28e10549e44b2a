// The only door into @ferry/native: the LinuxSyscalls interface and its factory, the kernel
// constants it takes, recvWithFds's limits and result, its errors, the sealed pump's types and
// limits, socketFd (a Node socket's fd, for a sealed pump or recvWithFds), and the pre-copy's types,
// limits, page delta format (for its decoder) and buildPageIndex (no syscall in it). The raw addon stays behind createLinuxSyscalls().
export { createLinuxSyscalls, RECV_WITH_FDS_MAX_BYTES, RECV_WITH_FDS_MAX_FDS } from './syscalls';
export type { LinuxSyscalls } from './syscalls';
export type { LazyServeResult, PageDeltaCounts, PageRelayResult, PrecopyReadResult, ReceivedWithFds, SealedPumpCounts, SealedPumpMode } from './native-binding';
export {
  SEALED_PUMP_KEY_BYTES,
  SEALED_PUMP_MAX_FRAME_BYTES,
  SEALED_PUMP_MIN_FRAME_BYTES,
  SEALED_PUMP_NONCE_PREFIX_BYTES,
  type SealedPumpOptions,
} from './sealed-pump';
export {
  buildPageIndex,
  LAZY_SERVE_MAX_RUNS,
  LAZY_SERVE_RUN_BYTES,
  packLazyServeRuns,
  PAGE_DELTA_HEAD_BYTES,
  PAGE_DELTA_MAGIC,
  PAGE_DELTA_MAX_LITERAL_PAGES,
  PAGE_DELTA_OP,
  PAGE_DELTA_PAGE_BYTES,
  PAGE_HASH_BYTES,
  PAGE_INDEX_MAX_FILE_PAGES,
  PAGE_INDEX_MAX_FILES,
  PRECOPY_READ_MAX_BYTES,
  PRECOPY_READ_MAX_RUNS,
  type DedupPagesOptions,
  type LazyServeOptions,
  type LazyServeProtocol,
  type LazyServeRun,
  type PageIndex,
  type PrecopyReadOptions,
} from './page-delta';
export { packPageRelayRuns, PAGE_RELAY_MAX_PAGES, PAGE_RELAY_MAX_RUNS, PAGE_RELAY_RUN_BYTES, type PageRelayOptions, type PageRelayRun } from './page-relay';
export { socketFd } from './socket-fd';
export { aeadInPlace, AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES } from './aead';
export { SyscallError, SyscallArgumentError, isSyscallError } from './errors';
export * from './constants';
