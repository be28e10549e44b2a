import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_SYMLINK_FOLLOW,
  STATX_BASIC_STATS,
  STATX_INO,
  STATX_MNT_ID,
  STATX_NLINK,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  createLinuxSyscalls,
  SyscallArgumentError,
  SyscallError,
} from './index';

const syscalls = createLinuxSyscalls();
/** O_TMPFILE as the kernel defines it (__O_TMPFILE | O_DIRECTORY); Node's fs.constants lacks it. */
const O_TMPFILE = 0o20200000;

function readAll(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

describe('linkat / statx / close', () => {
  let dir: string;
  const fds: number[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-native-files-'));
  });

  afterEach(() => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function open(file: string, flags: number | string, mode?: number): number {
    const fd = fs.openSync(file, flags, mode);
    fds.push(fd);
    return fd;
  }

  it('gives an unlinked-but-open (O_TMPFILE) file a name again through /proc/self/fd', () => {
    const fd = open(dir, O_TMPFILE | fs.constants.O_RDWR, 0o600);
    fs.writeSync(fd, 'kept alive only by an fd');
    const before = syscalls.statx(fd, '', AT_EMPTY_PATH, STATX_NLINK | STATX_INO);
    expect(before.nlink).toBe(0);

    const pin = path.join(dir, 'pin');
    syscalls.linkat(AT_FDCWD, `/proc/self/fd/${fd}`, AT_FDCWD, pin, AT_SYMLINK_FOLLOW);

    expect(readAll(pin)).toBe('kept alive only by an fd');
    const after = syscalls.statx(AT_FDCWD, pin, 0, STATX_NLINK | STATX_INO);
    expect(after.nlink).toBe(1);
    expect(after.ino).toBe(before.ino);
  });

  it('links the file behind an fd whose name was renamed away (the .fuse_hidden/.nfs case)', () => {
    // FUSE and NFS clients rename an open file to a hidden name instead of unlinking it, so it
    // still has a link and can be pinned; this simulates that on a local filesystem.
    const file = path.join(dir, 'data');
    fs.writeFileSync(file, 'silly-renamed');
    const fd = open(file, 'r');
    fs.renameSync(file, path.join(dir, '.fuse_hidden0001'));

    const pin = path.join(dir, 'pin');
    syscalls.linkat(AT_FDCWD, `/proc/self/fd/${fd}`, AT_FDCWD, pin, AT_SYMLINK_FOLLOW);
    expect(readAll(pin)).toBe('silly-renamed');
    expect(syscalls.statx(AT_FDCWD, pin, 0, STATX_NLINK).nlink).toBe(2);
  });

  it('is refused ENOENT for a regular file whose last link is gone (the kernel allows only O_TMPFILE)', () => {
    const file = path.join(dir, 'doomed');
    fs.writeFileSync(file, 'gone');
    const fd = open(file, 'r');
    fs.unlinkSync(file);

    const pin = path.join(dir, 'pin');
    expect(() => syscalls.linkat(AT_FDCWD, `/proc/self/fd/${fd}`, AT_FDCWD, pin, AT_SYMLINK_FOLLOW)).toThrow(
      expect.objectContaining({ errno: 2, code: 'ENOENT', syscall: 'linkat', dest: pin }),
    );
    expect(fs.existsSync(pin)).toBe(false);
  });

  it('statx of an fd reports the mnt_id of /proc/self/fdinfo and the inode of fstat', () => {
    const file = path.join(dir, 'stat-me');
    fs.writeFileSync(file, '12345');
    const fd = open(file, 'r');

    const stx = syscalls.statx(fd, '', AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_MNT_ID);
    expect(stx.mask & STATX_MNT_ID).toBe(STATX_MNT_ID);
    const fdinfoMntId = Number(/^mnt_id:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]);
    expect(stx.mntId).toBe(fdinfoMntId);

    const st = fs.fstatSync(fd, { bigint: true });
    expect(stx.ino).toBe(st.ino);
    expect(stx.size).toBe(5);
    expect(stx.nlink).toBe(1);
    expect(stx.mode).toBe(Number(st.mode));
    expect((BigInt(stx.devMajor) << 8n) | BigInt(stx.devMinor)).toBe(st.dev & 0xfffffn);

    // By path, the same file gives the same answer.
    expect(syscalls.statx(AT_FDCWD, file, 0, STATX_BASIC_STATS | STATX_MNT_ID)).toEqual(stx);
  });

  it('statx reports errors with the path and refuses relative or empty paths', () => {
    const missing = path.join(dir, 'missing');
    let error: unknown;
    try {
      syscalls.statx(AT_FDCWD, missing, 0, STATX_BASIC_STATS);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toMatchObject({ errno: 2, code: 'ENOENT', syscall: 'statx', path: missing });

    expect(() => syscalls.statx(AT_FDCWD, 'relative', 0, STATX_BASIC_STATS)).toThrow(SyscallArgumentError);
    expect(() => syscalls.statx(AT_FDCWD, '', AT_EMPTY_PATH, STATX_BASIC_STATS)).toThrow(SyscallArgumentError);
    expect(() => syscalls.statx(0, '', 0, STATX_BASIC_STATS)).toThrow(SyscallArgumentError);
    expect(() => syscalls.linkat(AT_FDCWD, '/a\0b', AT_FDCWD, '/c', 0)).toThrow(
      expect.objectContaining({ syscall: 'linkat', argument: 'oldpath' }),
    );
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
