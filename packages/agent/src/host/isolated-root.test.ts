import { lstat, mkdtemp, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { criuDumpExternals, criuRestoreRootArgs, isolatedRootPlan, makeRootSkeleton, mountCookie, resolveWorkloadUser, visibleInIsolatedRoot } from './isolated-root';

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
