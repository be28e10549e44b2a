import { SyscallArgumentError, fromNativeError } from './errors';
import { loadNativeBinding, type NativeBinding } from './native-binding';
import { checkAbsolutePath, checkFd, checkIntFlags, checkNullableCString, checkPid, checkUintFlags } from './validate';

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
