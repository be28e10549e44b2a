import type { Redis } from 'ioredis';
import { ErrorCode, silentLogger, type CriuInfo, type DrainEvent, type MigrationResult, type WorkloadInfo } from '@ferry/protocol';
import { drainPlan, runDrain } from './drain';
import { HostRegistry } from './host-registry';
import { MigrationRunner, type MigrateParams } from './migration-runner';
import type { MigrationStore } from './migration-store';
import type { CoordinatorOptions } from './coordinator-options';
import { MigrationSlots } from './migration-slots';
import { placeWorkload } from './placement';

function fakeRedis(): Redis {
  return { hset: async () => undefined, hgetall: async () => ({}) } as unknown as Redis;
}

const criu = { version: '4.2.1', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true, lazyPages: true, pageServerTls: true, lazyDump: true } as CriuInfo;
const GIB = 1024 ** 3;
const workload = (name: string, host: string, pid: number): WorkloadInfo => ({ name, host, state: 'running', pid, rssBytes: 1024, argv: ['sleep'], startedAt: '', mounts: [], localDirs: [] });

async function registryWith(lists: Record<string, WorkloadInfo[]>): Promise<HostRegistry> {
  const registry = new HostRegistry(fakeRedis(), 'test:', 10_000, () => 1_000);
  for (const [host, workloads] of Object.entries(lists)) {
    await registry.seen({ host, bootId: `b-${host}`, address: '198.18.0.1', criu, memory: { totalBytes: 8 * GIB, availableBytes: 4 * GIB }, workloads, workloadsDigest: `d-${host}` });
  }
  return registry;
}

/** A runner that records what it was asked to move and moves it at once. */
function fakeRunner(registry: HostRegistry): { runner: MigrationRunner; migrated: MigrateParams[] } {
  const slots = new MigrationSlots();
  const migrated: MigrateParams[] = [];
  const runner = {
    slots,
    place: (name: string, exclude?: ReadonlySet<string>) => {
      const w = registry.findWorkload(name)!;
      return placeWorkload(w, registry.placementView(slots), { maxIncomingPerHost: 2, exclude });
    },
    migrate: async (params: MigrateParams): Promise<MigrationResult> => {
      const ambiguous = registry.ambiguousWorkload(params.workload);
      if (ambiguous) throw ambiguous;
      migrated.push(params);
      const w = registry.findWorkload(params.workload)!;
      return { id: `m-${params.workload}`, workload: params.workload, from: w.host, to: 'h2', state: 'succeeded' } as MigrationResult;
    },
  } as unknown as MigrationRunner;
  return { runner, migrated };
}

async function drain(registry: HostRegistry, host: string): Promise<{ events: DrainEvent[]; migrated: MigrateParams[] }> {
  const { runner, migrated } = fakeRunner(registry);
  const events: DrainEvent[] = [];
  await runDrain(host, 'd1', drainPlan(registry, host), { registry, runner, limits: { maxMigrationsPerSource: 2, maxMigrationsPerTarget: 2 }, publish: (e) => events.push(e), log: silentLogger });
  return { events, migrated };
}

test('a drain never moves a workload another host also reports running: it is unplaced with CONFLICT naming both hosts', async () => {
  // h3 (compromised) lists `db`, the name of h1's real workload, as running on itself.
  const lists = { h1: [workload('db', 'h1', 10), workload('web', 'h1', 11)], h2: [], h3: [workload('db', 'h3', 66)] };
  for (const host of ['h1', 'h3']) {
    const { events, migrated } = await drain(await registryWith(lists), host);
    expect(migrated.map((m) => m.workload)).toEqual(host === 'h1' ? ['web'] : []);
    const unplaced = events.filter((e) => e.kind === 'unplaced');
    expect(unplaced).toEqual([
      expect.objectContaining({ workload: 'db', error: expect.objectContaining({ code: ErrorCode.CONFLICT, message: expect.stringMatching(/reported running on 2 hosts \(h1, h3\)/) }) }),
    ]);
    const done = events.find((e) => e.kind === 'done');
    expect(done).toMatchObject({ summary: { host, unplaced: 1, succeeded: host === 'h1' ? 1 : 0 } });
  }
});

test('without an impostor the same drain moves everything', async () => {
  const { events, migrated } = await drain(await registryWith({ h1: [workload('db', 'h1', 10), workload('web', 'h1', 11)], h2: [], h3: [] }), 'h1');
  expect(migrated.map((m) => m.workload).sort()).toEqual(['db', 'web']);
  expect(events.filter((e) => e.kind === 'unplaced')).toEqual([]);
});

test('migrate refuses a workload two hosts report running with CONFLICT naming them, before anything is stored or asked', async () => {
  const registry = await registryWith({ h1: [workload('db', 'h1', 10)], h2: [], h3: [workload('db', 'h3', 66)] });
  const untouched = new Proxy({}, { get: (_o, prop) => () => Promise.reject(new Error(`store.${String(prop)} called`)) }) as MigrationStore;
  const nc = { status: () => ({ [Symbol.asyncIterator]: () => ({ next: () => new Promise(() => undefined) }) }), request: () => Promise.reject(new Error('no agent may be asked')) };
  const runner = new MigrationRunner(nc as never, registry, untouched, { maxMigrationsPerTarget: 2 } as CoordinatorOptions);
  for (const to of [undefined, 'h2']) {
    await expect(runner.migrate({ workload: 'db', ...(to ? { to } : {}) })).rejects.toMatchObject({
      code: ErrorCode.CONFLICT,
      message: expect.stringMatching(/db is reported running on 2 hosts \(h1, h3\)/),
    });
  }
  expect(runner.slots.outgoing('h1') + runner.slots.outgoing('h3')).toBe(0);
});
