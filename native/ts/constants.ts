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

/** *at(2) directory and flags. */
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_SYMLINK_FOLLOW = 0x400;
export const AT_EMPTY_PATH = 0x1000;

/** lseek(2) whence. */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

/** statx(2) mask bits. */
export const STATX_TYPE = 0x1;
export const STATX_MODE = 0x2;
export const STATX_NLINK = 0x4;
export const STATX_INO = 0x100;
export const STATX_SIZE = 0x200;
export const STATX_BASIC_STATS = 0x7ff;
export const STATX_MNT_ID = 0x1000;

/** Namespace types for setns(2) and unshare(2). */
export const CLONE_NEWNS = 0x20000;
export const CLONE_NEWUTS = 0x4000000;
export const CLONE_NEWIPC = 0x8000000;
export const CLONE_NEWPID = 0x20000000;
export const CLONE_NEWNET = 0x40000000;

/** setsockopt(2) level and option of TCP repair mode (CRIU's --tcp-established puts sockets in it). */
export const IPPROTO_TCP = 6;
export const TCP_REPAIR = 19;
