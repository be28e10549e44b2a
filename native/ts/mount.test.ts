import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { MNT_DETACH, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REMOUNT, createLinuxSyscalls, SyscallArgumentError, SyscallError } from './index';

const syscalls = createLinuxSyscalls();

/** Mount points (paths) currently visible to this process, from /proc/self/mountinfo. */
function mountPoints(): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split(' ')[4]);
}

function mountInfoLine(target: string): string | undefined {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((line) => line.split(' ')[4] === target);
}

describe('mount / umount2', () => {
  let dir: string;
  let mounted: string[];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-native-mount-'));
    mounted = [];
  });

  afterEach(async () => {
    for (const target of mounted.reverse()) {
      if (mountPoints().includes(target)) await syscalls.umount2(target, MNT_DETACH);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('bind-mounts a directory onto another and detaches it again', async () => {
    const source = path.join(dir, 'source');
    const target = path.join(dir, 'target');
    fs.mkdirSync(source);
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(source, 'file.txt'), 'through the bind mount');

    await syscalls.mount(source, target, null, MS_BIND, null);
    mounted.push(target);

    expect(fs.readFileSync(path.join(target, 'file.txt'), 'utf8')).toBe('through the bind mount');
    expect(mountPoints()).toContain(target);

    await syscalls.umount2(target, MNT_DETACH);
    expect(mountPoints()).not.toContain(target);
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('mounts a tmpfs with options, makes it private and remounts it read-only', async () => {
    const target = path.join(dir, 'tmpfs');
    fs.mkdirSync(target);

    await syscalls.mount('tmpfs', target, 'tmpfs', 0, 'size=1m,mode=0700');
    mounted.push(target);
    const line = mountInfoLine(target);
    expect(line).toMatch(/ - tmpfs tmpfs rw,.*size=1024k,mode=700/);

    fs.writeFileSync(path.join(target, 'written'), 'in tmpfs');
    expect(fs.readFileSync(path.join(target, 'written'), 'utf8')).toBe('in tmpfs');

    // A propagation change takes neither source nor fstype.
    await syscalls.mount(null, target, null, MS_PRIVATE, null);
    expect(mountInfoLine(target)).not.toMatch(/ shared:\d+/);

    await syscalls.mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY, null);
    expect(() => fs.writeFileSync(path.join(target, 'refused'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));

    await syscalls.umount2(target, 0);
    expect(mountPoints()).not.toContain(target);
  });

  it('rejects with errno, code and syscall when the kernel refuses', async () => {
    const missing = path.join(dir, 'missing');
    const target = path.join(dir, 'target');
    fs.mkdirSync(target);

    const error = await syscalls.mount(missing, target, null, MS_BIND, null).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toMatchObject({ errno: 2, code: 'ENOENT', syscall: 'mount', path: missing, dest: target });
    expect((error as Error).message).toContain('ENOENT');
    expect((error as Error).message).toContain(target);

    // Not a mount point.
    await expect(syscalls.umount2(target, 0)).rejects.toMatchObject({ errno: 22, code: 'EINVAL', syscall: 'umount2' });
  });

  it('refuses bad arguments before calling the kernel', async () => {
    await expect(syscalls.mount('tmpfs', 'relative/target', 'tmpfs', 0, null)).rejects.toBeInstanceOf(SyscallArgumentError);
    await expect(syscalls.mount('tmpfs', `${dir}\0/evil`, 'tmpfs', 0, null)).rejects.toMatchObject({
      syscall: 'mount',
      argument: 'target',
    });
    await expect(syscalls.mount('tmpfs', dir, 'tmpfs', -1, null)).rejects.toMatchObject({ argument: 'flags' });
    await expect(syscalls.mount('tmpfs', dir, 'tmpfs', 1.5, null)).rejects.toMatchObject({ argument: 'flags' });
    await expect(syscalls.umount2('', 0)).rejects.toMatchObject({ syscall: 'umount2', argument: 'target' });
    expect(mountPoints()).not.toContain(dir);
  });
});
