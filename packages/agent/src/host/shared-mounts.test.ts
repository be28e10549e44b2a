import { execFile } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLinuxSyscalls, MNT_DETACH } from '@ferry/native';
import { ensureMounted, isSharedFsType, mountCommand, mountOf, parseMountinfo, readMounts, SILLY_RENAME_PATTERN, unmount } from './shared-mounts';

const sys = createLinuxSyscalls();

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '42 22 0:39 / /data rw,nosuid,nodev,relatime - fuse.sshfs root@198.18.0.2:/srv/shared rw,user_id=0,group_id=0,allow_other',
  '43 22 0:40 / /mnt/with\\040space rw - nfs4 files:/export rw,vers=4.2',
].join('\n');

test('mountinfo parsing and the mount holding a path', () => {
  const mounts = parseMountinfo(MOUNTINFO);
  expect(mounts[1]).toEqual({ mountId: 42, mountPoint: '/data', fsType: 'fuse.sshfs', source: 'root@198.18.0.2:/srv/shared' });
  expect(mounts[2].mountPoint).toBe('/mnt/with space');
  expect(mountOf(mounts, '/data/x/y')?.mountId).toBe(42);
  expect(mountOf(mounts, '/database')?.mountId).toBe(22);
  expect(mountOf(mounts, '/data')?.mountId).toBe(42);
  expect(isSharedFsType('fuse.sshfs') && isSharedFsType('nfs4') && !isSharedFsType('ext4')).toBe(true);
});

test('sshfs command pins the host key and passes options through', () => {
  const cmd = mountCommand({
    name: 'shared',
    type: 'sshfs',
    source: 'root@198.18.0.2:/srv/shared',
    path: '/data',
    options: { IdentityFile: '/k', UserKnownHostsFile: '/kh', StrictHostKeyChecking: 'yes' },
  });
  expect(cmd.file).toBe('sshfs');
  expect(cmd.args.slice(0, 3)).toEqual(['root@198.18.0.2:/srv/shared', '/data', '-o']);
  expect(cmd.args[3].split(',')).toEqual(expect.arrayContaining(['allow_other', 'IdentityFile=/k', 'UserKnownHostsFile=/kh', 'StrictHostKeyChecking=yes']));
});

test('nfs takes the same path with its options passed through; bind too', () => {
  expect(mountCommand({ name: 'n', type: 'nfs', source: 'files:/export', path: '/data', options: { vers: '4.2', hard: '' } })).toEqual({
    file: 'mount',
    args: ['-t', 'nfs', '-o', 'vers=4.2,hard', 'files:/export', '/data'],
  });
  expect(mountCommand({ name: 'b', type: 'bind', source: '/srv/x', path: '/data', options: {} })).toEqual({ file: 'mount', args: ['--bind', '/srv/x', '/data'] });
});

test.each([
  ['.fuse_hidden0000000200000001', true],
  ['.nfs000000000000d8a600000001', true],
  ['.nfs0000abcd', true],
  ['.fuse_hidden', false],
  ['fuse_hidden0000000200000001', false],
  ['.nfsfoo', false],
  ['data.nfs00000001', false],
])('silly-rename name %s -> %s', (name, hidden) => {
  expect(SILLY_RENAME_PATTERN.test(name)).toBe(hidden);
});

describe('ensureMounted (real bind mounts, root)', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-mounts-'));
  });
  afterEach(async () => {
    for (const m of (await readMounts()).filter((x) => x.mountPoint.startsWith(dir)).reverse()) await unmount(m.mountPoint, sys).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  test('mounts once, reuses the mount after, and unmounts', async () => {
    const src = join(dir, 'src');
    const at = join(dir, 'at', 'deep');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), 'shared bytes');
    const spec = { name: 'b', type: 'bind' as const, source: src, path: at, options: {} };
    expect(await ensureMounted(spec)).toEqual({ mounted: true });
    expect(readFileSync(join(at, 'f'), 'utf8')).toBe('shared bytes');
    expect(await ensureMounted(spec)).toEqual({ mounted: false });
    expect((await readMounts()).filter((m) => m.mountPoint === at)).toHaveLength(1);
    await unmount(at, sys);
    expect((await readMounts()).filter((m) => m.mountPoint === at)).toHaveLength(0);
  });

  test('another filesystem at the path, or a server that is not there, is FAILED_PRECONDITION', async () => {
    const at = join(dir, 'busy');
    mkdirSync(at);
    await promisify(execFile)('mount', ['-t', 'tmpfs', 'other', at]);
    await expect(ensureMounted({ name: 'n', type: 'nfs', source: 'files:/export', path: at, options: {} })).rejects.toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('already has a tmpfs mount'),
    });
    // Nothing listens on loopback port 9: ssh is refused at once.
    await expect(
      ensureMounted({
        name: 's',
        type: 'sshfs',
        source: 'root@127.0.0.1:/x',
        path: join(dir, 'nowhere'),
        options: { Port: '9', ConnectTimeout: '2', StrictHostKeyChecking: 'yes', UserKnownHostsFile: '/dev/null' },
      }),
    ).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('cannot mount filesystem s') });
  });

  test('a busy mount is detached lazily; its open files stay readable', async () => {
    const src = join(dir, 'src');
    const at = join(dir, 'busy-at');
    mkdirSync(src);
    writeFileSync(join(src, 'held'), 'still here');
    await ensureMounted({ name: 'b', type: 'bind', source: src, path: at, options: {} });
    const fd = openSync(join(at, 'held'), 'r');
    const flagsTried: number[] = [];
    try {
      await unmount(at, { umount2: (target, flags) => (flagsTried.push(flags), sys.umount2(target, flags)) });
      // The plain umount2 was refused EBUSY; MNT_DETACH took it out of the namespace.
      expect(flagsTried).toEqual([0, MNT_DETACH]);
      expect((await readMounts()).filter((m) => m.mountPoint === at)).toHaveLength(0);
      const buf = Buffer.alloc(10);
      expect(buf.subarray(0, readSync(fd, buf, 0, 10, 0)).toString()).toBe('still here');
    } finally {
      closeSync(fd);
    }
  });

  test('a path that is not a mount point is FAILED_PRECONDITION, with the kernel error as cause', async () => {
    const at = join(dir, 'plain');
    mkdirSync(at);
    await expect(unmount(at, sys)).rejects.toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining(`cannot unmount ${at}: umount2: EINVAL`),
      cause: expect.objectContaining({ code: 'EINVAL', syscall: 'umount2', path: at }),
    });
  });
});
