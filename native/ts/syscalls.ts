import { SyscallArgumentError, fromNativeError } from './errors';
import { loadNativeBinding, type NativeBinding } from './native-binding';
import {
  checkAbsolutePath,
  checkAtPath,
  checkBoolean,
  checkDirFd,
  checkFd,
  checkIntFlags,
  checkNullableCString,
  checkPid,
  checkSignal,
  checkUintFlags,
} from './validate';

/** What statx(2) reported. Check `mask` before trusting a field the kernel may not fill. */
export interface StatxResult {
  /** STATX_* bits of the fields the kernel filled. */
  mask: number;
  /** File type and permission bits (st_mode). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Inode number, exact (64-bit). CRIU's `file[<mnt_id hex>:<inode hex>]` key uses it. */
  ino: bigint;
  size: number;
  devMajor: number;
  devMinor: number;
  /** Mount id, the same number as `mnt_id` in /proc/PID/fdinfo and the first field of mountinfo. */
  mntId: number;
}

/** A child reaped by waitpidNoHang. */
export interface WaitStatus {
  pid: number;
  /** True when it called exit(); false when a signal killed it. */
  exited: boolean;
  /** Exit code when `exited`; otherwise the raw wait status. */
  status: number;
  /** The signal that killed it, or null when it exited. */
  signal: number | null;
}

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
  /** pidfd_send_signal(2): signal the process the pidfd refers to, never a PID reuser. */
  pidfdSendSignal(pidfd: number, signal: number): void;
  /** pidfd_getfd(2): duplicate the target process's descriptor `targetFd` into this process. */
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /** linkat(2). */
  linkat(olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number): void;
  /** statx(2). Use `(fd, '', AT_EMPTY_PATH, mask)` to stat a descriptor. */
  statx(dirfd: number, path: string, flags: number, mask: number): StatxResult;
  /** setns(2) for the calling (main JS) thread only. */
  setns(fd: number, nstype: number): void;
  /** unshare(2) for the calling (main JS) thread only. */
  unshare(flags: number): void;
  /**
   * waitpid(pid, WNOHANG): null while the child still runs. Only a positive pid is accepted:
   * waiting for "any child" would steal exit statuses from libuv's own child_process handling.
   */
  waitpidNoHang(pid: number): WaitStatus | null;
  /** prctl(PR_SET_CHILD_SUBREAPER): adopt orphaned descendants instead of leaving them to PID 1. */
  setChildSubreaper(on: boolean): void;
  /** close(2). */
  close(fd: number): void;
  /** lseek(2): sets a descriptor's offset (e.g. a reopened file's, before CRIU inherits it); returns the new offset. */
  lseek(fd: number, offset: number, whence: number): number;
  /** setsockopt(2) with an int value (e.g. IPPROTO_TCP, TCP_REPAIR, 0: a socket CRIU left in repair mode back to normal). */
  setsockoptInt(fd: number, level: number, optname: number, value: number): void;
}

function callSync<T>(call: () => T, context: { path?: string; dest?: string } = {}): T {
  try {
    return call();
  } catch (err) {
    throw fromNativeError(err, context);
  }
}

async function callAsync(call: () => Promise<void>, context: { path?: string; dest?: string }): Promise<void> {
  try {
    await call();
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

    pidfdSendSignal(pidfd, signal) {
      const checkedPidfd = checkFd('pidfd_send_signal', 'pidfd', pidfd);
      const checkedSignal = checkSignal('pidfd_send_signal', 'signal', signal);
      callSync(() => native().pidfdSendSignal(checkedPidfd, checkedSignal));
    },

    pidfdGetfd(pidfd, targetFd) {
      const checkedPidfd = checkFd('pidfd_getfd', 'pidfd', pidfd);
      const checkedTargetFd = checkFd('pidfd_getfd', 'targetFd', targetFd);
      return callSync(() => native().pidfdGetfd(checkedPidfd, checkedTargetFd));
    },

    linkat(olddirfd, oldpath, newdirfd, newpath, flags) {
      const checkedFlags = checkIntFlags('linkat', 'flags', flags);
      const checkedOldDirfd = checkDirFd('linkat', 'olddirfd', olddirfd);
      const checkedOldPath = checkAtPath('linkat', 'oldpath', checkedOldDirfd, oldpath, checkedFlags);
      const checkedNewDirfd = checkDirFd('linkat', 'newdirfd', newdirfd);
      // AT_EMPTY_PATH applies to oldpath only; the new name is never empty.
      const checkedNewPath = checkAtPath('linkat', 'newpath', checkedNewDirfd, newpath, 0);
      callSync(() => native().linkat(checkedOldDirfd, checkedOldPath, checkedNewDirfd, checkedNewPath, checkedFlags), {
        path: checkedOldPath,
        dest: checkedNewPath,
      });
    },

    statx(dirfd, path, flags, mask) {
      const checkedFlags = checkIntFlags('statx', 'flags', flags);
      const checkedDirfd = checkDirFd('statx', 'dirfd', dirfd);
      const checkedPath = checkAtPath('statx', 'path', checkedDirfd, path, checkedFlags);
      const checkedMask = checkUintFlags('statx', 'mask', mask);
      return callSync(() => native().statx(checkedDirfd, checkedPath, checkedFlags, checkedMask), {
        path: checkedPath === '' ? undefined : checkedPath,
      });
    },

    setns(fd, nstype) {
      const checkedFd = checkFd('setns', 'fd', fd);
      const checkedNstype = checkIntFlags('setns', 'nstype', nstype);
      callSync(() => native().setns(checkedFd, checkedNstype));
    },

    unshare(flags) {
      const checkedFlags = checkIntFlags('unshare', 'flags', flags);
      callSync(() => native().unshare(checkedFlags));
    },

    waitpidNoHang(pid) {
      const checkedPid = checkPid('waitpid', 'pid', pid);
      return callSync(() => native().waitpidNoHang(checkedPid));
    },

    setChildSubreaper(on) {
      const checkedOn = checkBoolean('prctl', 'on', on);
      callSync(() => native().setChildSubreaper(checkedOn));
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

    setsockoptInt(fd, level, optname, value) {
      const checkedFd = checkFd('setsockopt', 'fd', fd);
      const checkedLevel = checkIntFlags('setsockopt', 'level', level);
      const checkedOptname = checkIntFlags('setsockopt', 'optname', optname);
      if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
        throw new SyscallArgumentError('setsockopt', 'value', 'must be a 32-bit integer');
      }
      callSync(() => native().setsockoptInt(checkedFd, checkedLevel, checkedOptname, value));
    },
  };
}
