import type { Redis } from 'ioredis';
import type { CriuInfo, WorkloadInfo } from '@ferry/protocol';
import { HostRegistry } from './host-registry';

/** Only what the registry calls on Redis, in memory (persistence is the integration tests' business). */
function fakeRedis(): Redis {
  const hash = new Map<string, string>();
  return { hset: async (_k: string, f: string, v: string) => void hash.set(f, v), hgetall: async () => Object.fromEntries(hash) } as unknown as Redis;
}

const criu = { version: '4.2.1', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true, lazyPages: true, pageServerTls: true, lazyDump: true } as CriuInfo;
const workload = (pid: number): WorkloadInfo => ({ name: 'w', host: 'h1', state: 'running', pid, rssBytes: 1, argv: ['sleep'], startedAt: '', mounts: [], localDirs: [] });
const beat = (workloads: WorkloadInfo[]) => ({ host: 'h1', bootId: 'b1', address: '198.18.0.1', criu, memory: { totalBytes: 1, availableBytes: 1 }, workloads, workloadsDigest: `d${workloads.length}` });

test('a workload list taken before a stop does not bring the stopped workload back; a new one of that name shows', async () => {
  let now = 1_000;
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => now);
  await registry.seen(beat([workload(10)]));
  registry.removeWorkload('h1', 'w');
  // The agent's list, fetched before its stop: still has pid 10.
  registry.setWorkloads('h1', [workload(10)], 'd1');
  expect(registry.findWorkload('w')).toBeUndefined();
  await registry.seen(beat([workload(10)]));
  expect(registry.findWorkload('w')).toBeUndefined();
  // Started again: another process.
  registry.setWorkloads('h1', [workload(11)], 'd1');
  expect(registry.findWorkload('w')).toMatchObject({ pid: 11 });
  // Long after, the host's own word stands again.
  now += 60_000;
  registry.setWorkloads('h1', [workload(10)], 'd1');
  expect(registry.findWorkload('w')).toMatchObject({ pid: 10 });
});

test('a workload stopped right after a migration onto its host stays gone, whatever list comes late', async () => {
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => 1_000);
  await registry.seen(beat([workload(10)]));
  await registry.seen({ ...beat([]), host: 'h2', bootId: 'b2', address: '198.18.0.2' });
  registry.moveWorkload('w', 'h1', 'h2', 20);
  expect(registry.findWorkload('w')).toMatchObject({ host: 'h2', pid: 20 });
  registry.removeWorkload('h2', 'w');
  // h2's list from before the restore (without it) and h1's from before the freeze (with it).
  registry.setWorkloads('h2', [], 'd0');
  registry.setWorkloads('h1', [workload(10)], 'd1');
  expect(registry.findWorkload('w')).toBeUndefined();
});

test('an agent cannot report a workload for another host (it would shadow that host\'s workload in migrate and drain)', async () => {
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => 1_000);
  await registry.seen({ ...beat([]), host: 'h2', bootId: 'b2', address: '198.18.0.2' });
  registry.setWorkloads('h2', [{ ...workload(20), host: 'h2' }], 'd1');
  // h1 claims h2's workload (and one of its own).
  await registry.seen(beat([{ ...workload(66), host: 'h2' }, { ...workload(10), name: 'mine' }]));
  expect(registry.findWorkload('w')).toMatchObject({ host: 'h2', pid: 20 });
  expect(registry.findWorkload('mine')).toMatchObject({ host: 'h1', pid: 10 });
  registry.setWorkloads('h1', [{ ...workload(67), host: 'h2' }], 'd2');
  expect(registry.findWorkload('w')).toMatchObject({ host: 'h2', pid: 20 });
});

test('a heartbeat that lands while a cordon is being persisted does not undo the cordon', async () => {
  let release: () => void = () => undefined;
  const slow = {
    hset: () => new Promise<void>((r) => (release = r)),
    hgetall: async () => ({}),
  } as unknown as Redis;
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => 1_000);
  await registry.seen(beat([]));
  (registry as unknown as { redis: Redis }).redis = slow;
  const cordoning = registry.setCordoned('h1', true);
  // The beat replaces the host's entry while the cordon waits for Redis.
  await registry.seen(beat([]));
  release();
  await cordoning;
  expect(registry.describe('h1').cordoned).toBe(true);
});

test('a workload two hosts report running is ambiguous (CONFLICT naming both); a frozen source beside its restored copy is not', async () => {
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => 1_000);
  await registry.seen(beat([workload(10)]));
  await registry.seen({ ...beat([]), host: 'h3', bootId: 'b3', address: '198.18.0.3' });
  // `ferry hosts` shows each agent's boot id (a restarted agent shows as a new one).
  expect(registry.describe('h3').bootId).toBe('b3');
  expect(registry.ambiguousWorkload('w')).toBeNull();
  // During a migration: frozen on the source, running on the target.
  registry.setWorkloads('h3', [{ ...workload(30), host: 'h3' }], 'd1');
  registry.setWorkloads('h1', [{ ...workload(10), state: 'frozen' }], 'd2');
  expect(registry.hostsRunning('w')).toEqual(['h3']);
  expect(registry.ambiguousWorkload('w')).toBeNull();
  // h3 lists a running `w` of its own while h1's real one runs: either could be picked.
  registry.setWorkloads('h1', [workload(10)], 'd3');
  expect(registry.hostsRunning('w')).toEqual(['h1', 'h3']);
  const err = registry.ambiguousWorkload('w');
  expect(err).toMatchObject({ code: 'CONFLICT', details: ['h1', 'h3'] });
  expect(err?.message).toMatch(/reported running on 2 hosts \(h1, h3\)/);
  // The impostor's entry gone, the name is the real host's again.
  registry.setWorkloads('h3', [], 'd4');
  expect(registry.ambiguousWorkload('w')).toBeNull();
});
