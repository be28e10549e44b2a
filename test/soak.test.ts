/**
 * Soak: three small workloads migrated back and forth between two hosts, 50 rounds each, all three
 * at once each round: none lost, none duplicated, counters and memory intact at the end.
 */
import { cp } from 'node:fs/promises';
import { z } from 'zod';
import { dev } from '@ferry/dev-cluster';
import { CoordVerb, MigrationResult, request, subjects } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload } from './helpers/workload';

jest.setTimeout(600_000);

const ROUNDS = 50;
const NAMES = ['soaka', 'soakb', 'soakc'];
let cluster: TestCluster;
const workloads = new Map<string, CounterWorkload>();

beforeAll(async () => {
  cluster = await startTestCluster('tsoak', 235, { hosts: 2 });
});

afterAll(async () => {
  // Debugging aid: FERRY_TEST_KEEP_LOGS=DIR keeps the cluster's logs.
  const logDir = dev.readClusterState('tsoak')?.layout.logDir;
  if (process.env.FERRY_TEST_KEEP_LOGS && logDir) await cp(logDir, process.env.FERRY_TEST_KEEP_LOGS, { recursive: true }).catch(() => undefined);
  await cluster?.stop();
  for (const w of workloads.values()) await w.remove();
});

test(`${ROUNDS} back-and-forth migrations of ${NAMES.length} workloads: zero lost, zero duplicated`, async () => {
  for (const name of NAMES) {
    const w = await CounterWorkload.create();
    workloads.set(name, w);
    const res = await cluster.ferry(['run', '--host', 'h1', '--name', name, '--json', '--', ...w.argv(4)]);
    expect(res.code).toBe(0);
    await w.advancesPast(5, 30_000);
  }
  const downtimes: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const to = round % 2 === 0 ? 'h2' : 'h1';
    const counters = await Promise.all(NAMES.map((n) => workloads.get(n)!.counter()));
    const results = await Promise.all(
      NAMES.map((workload) =>
        request(cluster.nc, subjects.coord(CoordVerb.MIGRATE), { workload, to }, z.object({ migration: MigrationResult }), { timeoutMs: 120_000 }).catch((err: Error) => {
          throw new Error(`round ${round}, ${workload} -> ${to}: ${err.message}`);
        }),
      ),
    );
    for (const [i, { migration }] of results.entries()) {
      expect({ round, workload: migration.workload, state: migration.state, error: migration.error }).toEqual({ round, workload: NAMES[i], state: 'succeeded', error: null });
      downtimes.push(migration.downtimeMs);
      const w = workloads.get(NAMES[i]!)!;
      // Exactly one copy, the one the coordinator reports, and it carried on from where it was.
      expect(await w.runningCopies()).toEqual([migration.pid]);
      expect(await w.advancesPast(counters[i]!)).toBeGreaterThan(counters[i]!);
    }
  }
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number; state: string }>;
  for (const name of NAMES) {
    const w = workloads.get(name)!;
    const entries = ps.filter((e) => e.name === name);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ host: ROUNDS % 2 === 0 ? 'h1' : 'h2', state: 'running' });
    expect(await w.starts()).toBe(1);
    expect(await w.runningCopies()).toEqual([entries[0]!.pid]);
    expect(await w.verifyMemory(entries[0]!.pid)).toBe('OK');
  }
  downtimes.sort((a, b) => a - b);
  process.stdout.write(`soak: ${downtimes.length} migrations, downtime p50 ${downtimes[downtimes.length >> 1]} ms, max ${downtimes[downtimes.length - 1]} ms\n`);
});
