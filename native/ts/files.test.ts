import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { SEEK_CUR, SEEK_END, SEEK_SET, createLinuxSyscalls, SyscallArgumentError } from './index';

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
