import { lstat, mkdtemp, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';
import { criuDumpExternals, criuRestoreRootArgs, hostRootDirs, rootBindDirs, isolatedRootPlan, isolatedRootScriptArgs, makeRootSkeleton, mountCookie, resolveWorkloadUser, visibleInIsolatedRoot } from './isolated-root';

const LOG = '/var/lib/ferry/workloads/w/output.log';

test('cookies are letters and digits, one per path', () => {
  expect(mountCookie('/usr')).toMatch(/^ferry[0-9a-f]{24}$/);
  expect(mountCookie('/usr')).toBe(mountCookie('/usr'));
  expect(mountCookie('/usr')).not.toBe(mountCookie('/etc'));
});

test("a dump names each of ferry's own mounts external; a mount the workload made itself is refused before freezing", async () => {
  const plan = await isolatedRootPlan('/run/ferry/work/roots/w', LOG);
  const line = (id: number, mountPoint: string) => `${id} 1 0:1 / ${mountPoint} rw,relatime - ext4 /dev/vda rw`;
  const mountinfo = [line(1, '/'), line(2, '/usr'), line(3, '/dev/null'), line(4, LOG), line(5, '/proc'), line(6, '/dev/shm'), ''].join('\n');
  expect(criuDumpExternals(mountinfo, plan)).toEqual([
    '--external', `mnt[/usr]:${mountCookie('/usr')}`,
    '--external', `mnt[/dev/null]:${mountCookie('/dev/null')}`,
    '--external', `mnt[${LOG}]:${mountCookie(LOG)}`,
  ]);
  expect(() => criuDumpExternals(`${mountinfo}\n${line(7, '/mnt/own\\040mount')}`, plan)).toThrow(
    expect.objectContaining({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/mounted \/mnt\/own mount in its own mount namespace/) }),
  );
  // Its own mount over one of ferry's (a tmpfs on /usr) is refused too, not taken for the host's /usr.
  expect(() => criuDumpExternals(`${mountinfo}\n${line(8, '/usr')}`, plan)).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/mounted \/usr in its own/) }));
});

test("a restore roots CRIU in this host's skeleton and maps every cookie to this host's own path only", async () => {
  const plan = await isolatedRootPlan('/run/ferry/work/roots/w', LOG);
  const args = criuRestoreRootArgs(plan);
  expect(args.slice(0, 2)).toEqual(['--root', '/run/ferry/work/roots/w']);
  expect(args).toContain(`mnt[${mountCookie('/etc')}]:/etc`);
  expect(args).toContain(`mnt[${mountCookie(LOG)}]:${LOG}`);
  // Every mapping is to the path its cookie was made from: the image cannot pick a host path.
  for (let i = 2; i < args.length; i += 2) {
    const m = /^mnt\[(\w+)\]:(.+)$/.exec(args[i + 1]!)!;
    expect(m[1]).toBe(mountCookie(m[2]!));
  }
});

test("the root binds every top-level directory of the host but the kernel's and /run, then the workload's cluster filesystems, outer ones first", async () => {
  const dirs = await hostRootDirs();
  for (const kept of ['/proc', '/sys', '/dev', '/run']) expect(dirs).not.toContain(kept);
  expect(dirs).toEqual(expect.arrayContaining(['/usr', '/etc', '/tmp']));
  // The directory this test runs from is under one of them, whatever its top level is called.
  expect(dirs).toContain(`/${__dirname.split('/')[1]}`);
  // Top-level symlinks (/bin -> usr/bin) are copied into the skeleton, not bound.
  for (const entry of await readdir('/', { withFileTypes: true })) if (entry.isSymbolicLink()) expect(dirs).not.toContain(`/${entry.name}`);
  const plan = await isolatedRootPlan('/x', LOG, { mounts: ['/mnt/fs/inner', '/mnt/fs', '/tmp/', '/srv/a/../b'] });
  const binds = plan.binds.map((b) => b.path);
  expect(binds.slice(0, dirs.length)).toEqual(dirs);
  // A mount at a top-level directory is bound once; nested mounts after the ones they are in.
  expect(binds.filter((b) => b === '/tmp')).toHaveLength(1);
  expect(binds.indexOf('/mnt/fs')).toBeLessThan(binds.indexOf('/mnt/fs/inner'));
  expect(binds).toContain('/srv/b');
  expect(binds.slice(-1)).toEqual([LOG]);
  // In a user namespace of its own, only the usual directories (a bind of one with mounts below fails there).
  const userDirs = await hostRootDirs({ userNamespace: true });
  expect(userDirs).toEqual(expect.arrayContaining(['/usr', '/etc', '/tmp']));
  expect(userDirs.every((d) => ['/usr', '/etc', '/var', '/opt', '/srv', '/home', '/tmp', '/root'].includes(d))).toBe(true);
});

test("the pre-flight names the host directories a workload's root binds, from its own mountinfo, less its cluster filesystems", () => {
  const line = (id: number, mountPoint: string) => `${id} 1 0:1 / ${mountPoint} rw,relatime - ext4 /dev/vda rw`;
  const mountinfo = [line(1, '/'), line(2, '/usr'), line(3, '/work'), line(4, '/dev/null'), line(5, LOG), line(6, '/proc'), line(7, '/data'), line(8, '/srv/fs'), line(9, '/my\\040dir'), ''].join('\n');
  expect(rootBindDirs(mountinfo, ['/data', '/srv/fs'])).toEqual(['/my dir', '/usr', '/work']);
});

test('a root run as root (no --user) execs the program without changing its ids', async () => {
  const plan = await isolatedRootPlan('/x', LOG);
  const [root, log, cwd, uid, gid, n] = isolatedRootScriptArgs(plan, LOG, '/tmp', undefined);
  expect([root, log, cwd, uid, gid, Number(n)]).toEqual(['/x', LOG, '/tmp', '', '', plan.binds.length]);
  expect(isolatedRootScriptArgs(plan, LOG, '/tmp', { name: 'nobody', uid: 65534, gid: 65534 }).slice(3, 5)).toEqual(['65534', '65534']);
});

test('the working directory must be inside the root', async () => {
  const plan = await isolatedRootPlan('/x', LOG);
  expect(visibleInIsolatedRoot(plan, '/tmp/a')).toBe(true);
  expect(visibleInIsolatedRoot(plan, '/')).toBe(true);
  expect(visibleInIsolatedRoot(plan, '/run/ferry')).toBe(false);
  expect(visibleInIsolatedRoot(plan, '/usrx')).toBe(false);
});

test('the skeleton has a mount point for every bind, the host top-level symlinks and /dev links', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-root-test-'));
  try {
    const plan = await isolatedRootPlan(join(dir, 'w'), join(dir, 'logs', 'output.log'));
    await makeRootSkeleton(plan);
    expect((await lstat(join(dir, 'w', 'usr'))).isDirectory()).toBe(true);
    expect((await lstat(join(dir, 'w', 'dev', 'null'))).isFile()).toBe(true);
    expect((await lstat(join(dir, 'w', dir, 'logs', 'output.log'))).isFile()).toBe(true);
    expect((await lstat(join(dir, 'w', 'proc'))).isDirectory()).toBe(true);
    expect(await readlink(join(dir, 'w', 'dev', 'fd'))).toBe('/proc/self/fd');
    const hostBin = await lstat('/bin');
    if (hostBin.isSymbolicLink()) expect(await readlink(join(dir, 'w', 'bin'))).toBe(await readlink('/bin'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--user names resolve on this host; a bad or unknown one is INVALID_ARGUMENT', async () => {
  await expect(resolveWorkloadUser('nobody')).resolves.toMatchObject({ name: 'nobody', uid: 65534 });
  await expect(resolveWorkloadUser('nobody:root')).resolves.toMatchObject({ uid: 65534, gid: 0 });
  for (const bad of ['no-such-user-x', 'nobody:no-such-group-x', 'Root', '../x', 'a b']) {
    await expect(resolveWorkloadUser(bad)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  }
});
