/** Launching a counter workload through the CLI and checking one after a migration or a rollback. */
import type { TestCluster } from './cluster';
import { CounterWorkload, waitFor } from './workload';

/** Runs the memory-counter fixture as `name` on `host` and waits until it counts. */
export async function launchCounter(cluster: TestCluster, name: string, host: string, mib: number, children = false): Promise<CounterWorkload> {
  const w = await CounterWorkload.create();
  const res = await cluster.ferry(['run', '--host', host, '--name', name, '--json', '--', ...w.argv(mib, children)]);
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ name, host, state: 'running' });
  await w.advancesPast(5, 30_000);
  return w;
}

/**
 * The workload runs on `host` and nowhere else: one ps entry, running (not frozen), its counter
 * moving on, started once (restored, not restarted), one copy in /proc, memory intact.
 */
export async function expectIntactOn(cluster: TestCluster, w: CounterWorkload, name: string, host: string): Promise<number> {
  const entry = await waitFor(`${name} running on ${host}`, async () => {
    const ps = await cluster.ferry(['ps', '--json']);
    const entries = (ps.json ?? []).filter((x: { name: string }) => x.name === name);
    return entries.length === 1 && entries[0].host === host && entries[0].state === 'running' ? entries[0] : undefined;
  }, 30_000);
  const c = await w.counter();
  await w.advancesPast(c + 5);
  expect(await w.starts()).toBe(1);
  await waitFor('exactly one copy', async () => {
    const copies = await w.runningCopies();
    return copies.length === 1 && copies[0] === entry.pid;
  }, 20_000);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');
  return entry.pid;
}
