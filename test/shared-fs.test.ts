/**
 * Shared filesystems (sshfs from the dev cluster's storage host) remounted on the target, and
 * unlinked-but-open files: pinned on the server and reopened on the target when shared, copied as
 * ghost files when local, for open fds and for memory mappings.
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

const CLUSTER = 'tshfs';
const cleanup: string[] = [];
const FIXTURE = join(__dirname, 'fixtures', 'unlinked-files.py');
let cluster: TestCluster;
let sharedDir: string;

// h2 restores through a CRIU wrapper that damages the image while `fail-restore` exists beside it.
const WRAPPER_DIR = mkdtempSync(join(tmpdir(), 'ferry-criu-wrapper-'));
copyFileSync(join(__dirname, 'fixtures', 'criu-failing-restore.sh'), join(WRAPPER_DIR, 'criu'));
cleanup.push(WRAPPER_DIR);

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 204, { agentEnvFor: (h): Record<string, string> => (h === 'h2' ? { FERRY_CRIU_PATH: join(WRAPPER_DIR, 'criu') } : {}) });
  sharedDir = dev.readClusterState(CLUSTER)!.layout.sharedDir;
});

afterAll(async () => {
  await cluster?.stop();
  for (const d of cleanup) await rm(d, { recursive: true, force: true });
  // Mount points the hosts created on the machine's filesystem (shared with the hosts), empty now.
  for (const d of ['/data', '/srv/blocked']) await rmdir(d).catch(() => undefined);
});

function agentPid(host: string): number {
  return dev.readClusterState(CLUSTER)!.processes.find((p) => p.role === 'agent' && p.host === host)!.pid;
}

/** Mounts in a host's mount namespace (read through its agent). */
async function hostMounts(host: string): Promise<string[]> {
  const text = await readFile(`/proc/${agentPid(host)}/mountinfo`, 'utf8');
  return text.split('\n').filter((l) => l.includes(' - fuse.sshfs ') || l.includes(' - tmpfs ')).map((l) => `${l.split(' ')[4]} ${l.split(' - ')[1].split(' ')[0]}`);
}

async function leftovers(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(dir, e.name));
      else if (/^\.(ferry-pin-|fuse_hidden)/.test(e.name)) out.push(join(dir, e.name));
    }
  };
  await walk(sharedDir);
  return out;
}

test('a workload with unlinked-but-open shared, local (one sparse) and mapped files migrates; data travels by name', async () => {
  const w = await CounterWorkload.create();
  const localDir = await mkdtemp(join(tmpdir(), 'ferry-local-'));
  cleanup.push(w.stateDir, localDir);
  expect(await hostMounts('h2')).not.toContainEqual(expect.stringMatching(/^\/data /));

  // In the host's mount namespace: in a root of its own, unlinked files on a cluster filesystem are
  // refused before the freeze (test/state-classes.test.ts), as the target reopens them on its own mount.
  const run = await cluster.ferry([
    'run', '--host', 'h1', '--name', 'files', '--mount', 'shared:/data', '--host-root', '--json', '--',
    '/usr/bin/python3', FIXTURE, w.stateDir, '/data/files', localDir, '48', '3',
  ]);
  expect(run.code).toBe(0);
  await w.advancesPast(10, 60_000);
  expect(await hostMounts('h1')).toContain('/data fuse.sshfs');
  const [before] = (await cluster.ferry(['ps', '--json'])).json;
  expect(await w.verifyMemory(before.pid)).toBe('OK');
  // Unlinked on sshfs: alive on the server under the client's hidden names.
  expect((await readdir(join(sharedDir, 'files'))).filter((n) => n.startsWith('.fuse_hidden'))).toHaveLength(2);

  // 1. A failed restore rolls back: the source runs on, pins and the target's mount are gone.
  await writeFile(join(WRAPPER_DIR, 'fail-restore'), '');
  const failed = await cluster.ferry(['migrate', 'files', '--to', 'h2', '--json']);
  await rm(join(WRAPPER_DIR, 'fail-restore'));
  expect(failed.json).toMatchObject({ state: 'rolled-back', error: { code: 'RESTORE_FAILED' } });
  expect((await readdir(join(sharedDir, 'files'))).filter((n) => n.startsWith('.ferry-pin-'))).toEqual([]);
  expect(await hostMounts('h2')).not.toContainEqual(expect.stringMatching(/^\/data /));
  const c0 = await w.counter();
  await w.advancesPast(c0 + 5);
  expect(await w.verifyMemory(before.pid)).toBe('OK');

  // 2. The real thing.
  const res = await cluster.ferry(['migrate', 'files', '--to', 'h2', '--json']);
  expect(res.code).toBe(0);
  expect(res.json.state).toBe('succeeded');
  // 48 MiB on sshfs stayed on the server; only the 3 MiB local ghost file, the sparse one's 8 KiB
  // (2 GiB by its size: judged by its blocks, it is no reason to refuse) and memory travelled.
  expect(res.json.bytesTransferred).toBeLessThan(24 * 1024 * 1024);
  expect(res.json.bytesTransferred).toBeGreaterThan(3 * 1024 * 1024);

  const c1 = await w.counter();
  await w.advancesPast(c1 + 10);
  expect(await w.starts()).toBe(1);
  const [after] = (await cluster.ferry(['ps', '--json'])).json;
  expect(after).toMatchObject({ name: 'files', host: 'h2', state: 'running' });
  expect(await w.verifyMemory(after.pid)).toBe('OK');
  // The target mounted the filesystem; the source unmounted it (nothing else used it).
  expect(await hostMounts('h2')).toContain('/data fuse.sshfs');
  expect(await hostMounts('h1')).not.toContainEqual(expect.stringMatching(/^\/data /));
  // It keeps appending to its file on the shared filesystem, from h2 now.
  const lines = async () => (await readFile(join(sharedDir, 'files', 'appended.txt'), 'utf8')).trim().split('\n');
  const n = (await lines()).length;
  await waitFor('appends from h2', async () => (await lines()).length > n + 10);
  const ticks = (await lines()).map((l) => Number(l.split(' ')[1]));
  expect(ticks).toEqual(ticks.map((_, i) => i + 1));
  // Pins were unlinked after the restore; the hidden names now belong to h2's client.
  expect((await readdir(join(sharedDir, 'files'))).filter((x) => x.startsWith('.ferry-pin-'))).toEqual([]);

  expect((await cluster.ferry(['stop', 'files'])).code).toBe(0);
  await waitFor('no pin or hidden file left', async () => (await leftovers()).length === 0, 10_000);
});

test('a filesystem the target cannot mount fails before anything is frozen (FAILED_PRECONDITION)', async () => {
  const w = await CounterWorkload.create();
  cleanup.push(w.stateDir);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'blocked', '--mount', 'shared:/srv/blocked', '--json', '--', ...w.argv(4)]);
  expect(run.code).toBe(0);
  await w.advancesPast(10, 30_000);
  // Something else already sits at that path on h2.
  await dev.hostExec(CLUSTER, 'h2', ['sh', '-c', 'mkdir -p /srv/blocked && mount -t tmpfs blocker /srv/blocked']);
  const res = await cluster.ferry(['migrate', 'blocked', '--to', 'h2', '--json']);
  expect(res.code).toBe(4);
  expect(res.json).toMatchObject({ state: 'rolled-back', error: { code: 'FAILED_PRECONDITION' } });
  expect(res.json.error.message).toMatch(/srv\/blocked/);
  const status = await cluster.ferry(['status', res.json.id, '--json']);
  expect(status.json.downtimeMs).toBe(0);
  const [entry] = (await cluster.ferry(['ps', '--json'])).json.filter((x: { name: string }) => x.name === 'blocked');
  expect(entry).toMatchObject({ host: 'h1', state: 'running' });
  expect((await cluster.ferry(['stop', 'blocked'])).code).toBe(0);
});
