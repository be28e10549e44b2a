/**
 * Files a workload holds open on its host's own disk (issue #19): each dev host has a private /srv,
 * as separate machines have separate disks. A workload holding open a file there that it did not
 * declare (`--local-dir`) is refused before anything is frozen, and so is one whose file the target
 * has at the same path with the same size but other bytes; files every host has the same (python3,
 * its libraries) do not stand in the way.
 */
import { mkdtemp, readFile, readdir, realpath, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { AgentVerb, requestAgentVerb } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { expectIntactOn, launchCounter } from './helpers/checks';
import { waitFor } from './helpers/workload';

jest.setTimeout(180_000);

const CLUSTER = 'tlfiles';
let cluster: TestCluster;
const cleanup: string[] = [];

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 249);
});

afterAll(async () => {
  await cluster?.stop();
  for (const d of cleanup) await rm(d, { recursive: true, force: true });
});

/**
 * Writes FILE (its parent made if missing) with 64 lines naming this host, holds it open read-only,
 * and counts in STATE/counter (through a short-lived temporary file, as programs often do); one
 * line per start in STATE/starts.
 */
const HOLDER = `
import os, socket, sys, time
state, path = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "wb") as f:
    f.write(("%s's own bytes\\n" % socket.gethostname()).encode() * 64)
held = os.open(path, os.O_RDONLY)
with open(os.path.join(state, "starts"), "a") as f:
    f.write("start %d\\n" % os.getpid())
n = 0
while True:
    n += 1
    tmp = os.path.join(state, "counter.tmp")
    with open(tmp, "w") as f:
        f.write(str(n))
    os.rename(tmp, os.path.join(state, "counter"))
    time.sleep(0.02)
`;

type PsEntry = { name: string; host: string; state: string; pid: number };
const entriesOf = async (name: string): Promise<PsEntry[]> => ((await cluster.ferry(['ps', '--json'])).json as PsEntry[]).filter((e) => e.name === name);
const counterIn = async (state: string): Promise<number> => Number(await readFile(join(state, 'counter'), 'utf8').catch(() => '0')) || 0;

/** Living copies of the holder for this state dir: python3 roots, not the unshare that launched it, nor zombies. */
async function holderCopies(state: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (args[0] === '/usr/bin/python3' && args[1] === '-c' && args[3] === state && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') pids.push(Number(entry));
  }
  return pids;
}

/** The lifecycle steps of one migration, from `ferry events`. */
async function stepsOf(migrationId: string): Promise<string[]> {
  const events = (await cluster.ferry(['events', '--json', '--limit', '1000'])).json as Array<{ migrationId?: string; step: string }>;
  return events.filter((e) => e.migrationId === migrationId).map((e) => e.step);
}

/**
 * Migrates `name` to h2 and expects it refused in the pre-flight naming `problem`, rolled back with
 * nothing frozen (zero downtime, no `frozen` step); resolves with the error message.
 */
async function expectRefusedBeforeFreeze(name: string, problem: string): Promise<string> {
  const res = await cluster.ferry(['migrate', name, '--to', 'h2', '--json']);
  expect(res.code).toBe(4);
  expect(res.json).toMatchObject({ state: 'rolled-back', error: { code: 'FAILED_PRECONDITION' } });
  expect(res.json.error.message).toContain(problem);
  const status = await cluster.ferry(['status', res.json.id, '--json']);
  expect(status.json.downtimeMs).toBe(0);
  const steps = await stepsOf(res.json.id);
  expect(steps).toEqual(expect.arrayContaining(['requested', 'rolled-back']));
  expect(steps).not.toContain('preflight-passed');
  expect(steps).not.toContain('frozen');
  return res.json.error.message;
}

/** Still on h1 under the same pid, running, one copy, started once, counting on. */
async function expectUndisturbed(name: string, state: string, pid: number): Promise<void> {
  expect(await entriesOf(name)).toEqual([expect.objectContaining({ host: 'h1', state: 'running', pid })]);
  const c = await counterIn(state);
  await waitFor('the counter moves on', async () => (await counterIn(state)) > c + 10);
  expect(await holderCopies(state)).toEqual([pid]);
  expect((await readFile(join(state, 'starts'), 'utf8')).trim().split('\n')).toHaveLength(1);
}

test('/srv is private to each host; every other path is shared', async () => {
  const probe = `/srv/private-${process.pid}`;
  await dev.hostExec(CLUSTER, 'h1', ['sh', '-c', `echo h1 > ${probe}`]);
  expect((await dev.hostExec(CLUSTER, 'h1', ['cat', probe])).stdout).toBe('h1\n');
  await expect(dev.hostExec(CLUSTER, 'h2', ['test', '-e', probe])).rejects.toThrow();
  expect(existsSync(probe)).toBe(false);
  // /tmp (like every path but /srv) is the machine's, seen alike by every host.
  const shared = await mkdtemp(join(tmpdir(), 'ferry-lf-shared-'));
  cleanup.push(shared);
  await dev.hostExec(CLUSTER, 'h1', ['sh', '-c', `echo from-h1 > ${shared}/x`]);
  expect((await dev.hostExec(CLUSTER, 'h2', ['cat', `${shared}/x`])).stdout).toBe('from-h1\n');
  await dev.hostExec(CLUSTER, 'h1', ['rm', probe]);
});

test('a file held open on h1 /srv, undeclared, is refused before the freeze; so is a same-size file of other bytes on h2', async () => {
  const state = await mkdtemp(join(tmpdir(), 'ferry-lf-state-'));
  cleanup.push(state);
  const file = '/srv/lf-data/held.bin';
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'lheld', '--json', '--', '/usr/bin/python3', '-c', HOLDER, state, file]);
  expect(run.code).toBe(0);
  const [entry] = await waitFor('lheld running', async () => {
    const e = await entriesOf('lheld');
    return e.length === 1 && e[0].state === 'running' ? e : undefined;
  });
  await waitFor('it counts', async () => (await counterIn(state)) > 5);

  // What the source's pre-flight reports: the file, with its identity as h1 has it.
  const { localFiles } = await requestAgentVerb(cluster.nc, 'h1', AgentVerb.MIGRATABLE, { name: 'lheld' }, { timeoutMs: 10_000 });
  const listed = localFiles.find((f) => f.path === file);
  expect(listed).toMatchObject({ size: 15 * 64, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
  expect(localFiles.filter((f) => f.path.startsWith(state))).toEqual([]);

  // (a) h2 has no such file: only on h1.
  expect(await expectRefusedBeforeFreeze('lheld', `only on h1: ${file}`)).toMatch(/ferry run --local-dir.*cluster filesystem/);
  await expectUndisturbed('lheld', state, entry.pid);

  // (b) h2 has a file there of the same size, written on h2: its mtime differs, then (mtime made
  // the same as h1's, to the nanosecond) its content.
  await dev.hostExec(CLUSTER, 'h2', ['sh', '-c', `mkdir -p /srv/lf-data && for i in $(seq 64); do echo "h2's own bytes"; done > ${file}`]);
  expect((await dev.hostExec(CLUSTER, 'h2', ['stat', '-c', '%s', file])).stdout.trim()).toBe(String(15 * 64));
  await expectRefusedBeforeFreeze('lheld', `differs on h2 (mtime): ${file}`);
  const mtime = (await dev.hostExec(CLUSTER, 'h1', ['stat', '-c', '%.9Y', file])).stdout.trim();
  await dev.hostExec(CLUSTER, 'h2', ['touch', '-m', '-d', `@${mtime}`, file]);
  expect((await dev.hostExec(CLUSTER, 'h2', ['stat', '-c', '%.9Y', file])).stdout.trim()).toBe(mtime);
  await expectRefusedBeforeFreeze('lheld', `differs on h2 (sha256): ${file}`);
  await expectUndisturbed('lheld', state, entry.pid);

  expect((await cluster.ferry(['stop', 'lheld'])).code).toBe(0);
  await waitFor('no copy left', async () => (await holderCopies(state)).length === 0);
  await dev.hostExec(CLUSTER, 'h1', ['rm', '-r', '/srv/lf-data']);
  await dev.hostExec(CLUSTER, 'h2', ['rm', '-r', '/srv/lf-data']);
});

test('a workload holding only files every host has the same (python3, its libraries) migrates', async () => {
  const w = await launchCounter(cluster, 'lsystem', 'h1', 8);
  cleanup.push(w.stateDir);
  // The pre-flight does compare them: the interpreter is among its local files, and h2 has it the same.
  const { localFiles, rootDirs } = await requestAgentVerb(cluster.nc, 'h1', AgentVerb.MIGRATABLE, { name: 'lsystem' }, { timeoutMs: 10_000 });
  expect(localFiles.map((f) => f.path)).toContain(await realpath('/usr/bin/python3'));
  // And the directories its own root binds, which h2 has too.
  expect(rootDirs).toEqual(expect.arrayContaining(['/usr', '/etc', '/tmp']));
  expect(await requestAgentVerb(cluster.nc, 'h2', AgentVerb.CHECK_FILES, { files: localFiles, dirs: rootDirs }, { timeoutMs: 10_000 })).toEqual({ missing: [], different: [], missingDirs: [] });

  const res = await cluster.ferry(['migrate', 'lsystem', '--to', 'h2', '--json']);
  expect(res.code).toBe(0);
  expect(res.json).toMatchObject({ state: 'succeeded', to: 'h2' });
  await expectIntactOn(cluster, w, 'lsystem', 'h2');
  expect((await cluster.ferry(['stop', 'lsystem'])).code).toBe(0);
});
