import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { SEEK_CUR, SEEK_END, SEEK_SET, createLinuxSyscalls, SyscallArgumentError, SyscallError } from './index';
import { loadNativeBinding } from './native-binding';

const syscalls = createLinuxSyscalls();

describe('close', () => {
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-native-files-'));
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('close releases the fd and reports EBADF for one that is not open', () => {
    const file = path.join(dir, 'closed');
    const fd = fs.openSync(file, 'w');
    expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toBe(file);
    syscalls.close(fd);
    // The number may already be reused (by us reading /proc, or another thread), never for our file.
    let nowNames: string | undefined;
    try {
      nowNames = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      nowNames = undefined;
    }
    expect(nowNames).not.toBe(file);
    // Far above any fd in use (a recently closed number could be reused by another thread).
    expect(() => syscalls.close(1_000_000)).toThrow(expect.objectContaining({ errno: 9, code: 'EBADF', syscall: 'close' }));
    expect(() => syscalls.close(-1)).toThrow(SyscallArgumentError);
  });
});

describe('unreadBytes', () => {
  test('counts what waits in a FIFO without reading it, also through a second descriptor from /proc', () => {
    const sys = createLinuxSyscalls();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-fionread-'));
    const fifo = path.join(dir, 'fifo');
    execFileSync('/usr/bin/mkfifo', [fifo]);
    // O_RDWR: both ends in one descriptor, so the open does not wait for a peer.
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      expect(sys.unreadBytes(fd)).toBe(0);
      fs.writeSync(fd, 'twelve bytes');
      expect(sys.unreadBytes(fd)).toBe(12);
      expect(sys.unreadBytes(fd)).toBe(12);
      // The way the pre-flight looks: a new descriptor of the same pipe, opened through /proc.
      const again = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        expect(sys.unreadBytes(again)).toBe(12);
      } finally {
        fs.closeSync(again);
      }
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(() => sys.unreadBytes(999999)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'ioctl' }));
  });
});

describe('lseek', () => {
  test('moves a descriptor offset that a later read starts from', () => {
    const sys = createLinuxSyscalls();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lseek-'));
    try {
      const file = path.join(dir, 'f');
      fs.writeFileSync(file, 'hello world');
      const fd = fs.openSync(file, 'r');
      try {
        expect(sys.lseek(fd, 6, SEEK_SET)).toBe(6);
        const buf = Buffer.alloc(5);
        // position null: read from (and advance) the descriptor's own offset.
        expect(fs.readSync(fd, buf, 0, 5, null)).toBe(5);
        expect(buf.toString()).toBe('world');
        expect(sys.lseek(fd, 0, SEEK_CUR)).toBe(11);
        expect(sys.lseek(fd, -5, SEEK_END)).toBe(6);
      } finally {
        fs.closeSync(fd);
      }
      expect(() => sys.lseek(999999, 0, SEEK_SET)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'lseek' }));
      expect(() => sys.lseek(0, 1.5, SEEK_SET)).toThrow(/offset/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('setPipeSize', () => {
  const MIB = 1024 * 1024;

  /** A FIFO opened O_RDWR (both ends in one descriptor, no waiting for a peer), non-blocking. */
  function withFifo(body: (fd: number) => void): void {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-pipesize-'));
    const fifo = path.join(dir, 'fifo');
    execFileSync('/usr/bin/mkfifo', [fifo]);
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      body(fd);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /** CAP_SYS_RESOURCE (capability 24) in this process's effective set: pipe-max-size does not bind it. */
  function hasCapSysResource(): boolean {
    const capEff = /CapEff:\s+([0-9a-f]+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1];
    return (BigInt(`0x${capEff}`) & (1n << 24n)) !== 0n;
  }

  test('enlarges a pipe to at least the size asked for, which then holds that much unread', () => {
    withFifo((fd) => {
      const size = syscalls.setPipeSize(fd, MIB);
      expect(size).toBeGreaterThanOrEqual(MIB);
      // Non-blocking: the default 64 KiB pipe would have taken only its first 64 KiB.
      expect(fs.writeSync(fd, Buffer.alloc(MIB, 7))).toBe(MIB);
      expect(syscalls.unreadBytes(fd)).toBe(MIB);
      // The kernel rounds up (to a power-of-two number of pages) and says what it set.
      expect(syscalls.setPipeSize(fd, MIB + 1)).toBe(2 * MIB);
      // Below what it holds now: the kernel refuses to drop bytes.
      expect(() => syscalls.setPipeSize(fd, 4096)).toThrow(expect.objectContaining({ code: 'EBUSY', syscall: 'fcntl' }));
    });
  });

  test('above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE: EPERM, for the caller to handle', () => {
    const max = Number(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'));
    withFifo((fd) => {
      expect(syscalls.setPipeSize(fd, max)).toBe(max);
      if (!hasCapSysResource()) {
        expect(() => syscalls.setPipeSize(fd, 2 * max)).toThrow(expect.objectContaining({ code: 'EPERM', syscall: 'fcntl' }));
      }
    });
  });

  test('a descriptor that is not a pipe is a SyscallError; arguments are checked before the call', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-pipesize-'));
    const fd = fs.openSync(path.join(dir, 'file'), 'w');
    try {
      let error: unknown;
      try {
        syscalls.setPipeSize(fd, MIB);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(SyscallError);
      expect(error).toMatchObject({ code: 'EBADF', syscall: 'fcntl' });
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    for (const [fdArg, bytes] of [[-1, MIB], [3, 0], [3, 1.5], [3, 2 ** 31]]) {
      expect(() => syscalls.setPipeSize(fdArg, bytes)).toThrow(SyscallArgumentError);
    }
    // The addon's own check, should TypeScript be bypassed.
    expect(() => loadNativeBinding().setPipeSize(3, 0)).toThrow(/bytes/);
  });
});
