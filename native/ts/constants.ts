// Kernel ABI values (x86_64/arm64 Linux; stable across kernel versions). They live in TypeScript,
// not only in the addon, so callers can use them without loading the addon (e.g. in tests that
// substitute a fake LinuxSyscalls); constants.test.ts checks each one against the addon's
// values, which come from the C headers.

/** mount(2) flags. */
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_REMOUNT = 0x20;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;

/** umount2(2) flags. */
export const MNT_FORCE = 0x1;
export const MNT_DETACH = 0x2;
export const UMOUNT_NOFOLLOW = 0x8;

/** lseek(2) whence. */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

/** setsockopt(2) level and option of TCP repair mode (CRIU's --tcp-established puts sockets in it). */
export const IPPROTO_TCP = 6;
export const TCP_REPAIR = 19;

/**
 * setsockopt(2) socket-level buffer sizes. The FORCE variants (CAP_NET_ADMIN) may exceed
 * net.core.{w,r}mem_max, which a bulk stream between threads wants (fewer wake-ups per byte).
 */
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;

/** shutdown(2) how: stop receiving, stop sending (the peer reads end of stream), or both. */
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
