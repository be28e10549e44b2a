/**
 * Kinds of process state a real program holds, and what a migration does with each: it moves, or
 * it is refused before anything is frozen with a reason an operator can act on (issue #17).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { waitFor } from './helpers/workload';

jest.setTimeout(180_000);

let cluster: TestCluster;
let stateDir: string;

beforeAll(async () => {
  // h3 reports that its CRIU cannot refill a pipe, as a host with a kernel that refuses the
  // vmsplice gift would (its probe would find out; here a fault says so).
  cluster = await startTestCluster('tstate', 248, { hosts: 3, agentEnvFor: (host): Record<string, string> => (host === 'h3' ? { FERRY_FAULT_NO_PIPE_DATA: '1' } : {}) });
  stateDir = await mkdtemp(join(tmpdir(), 'ferry-state-'));
});

afterAll(async () => {
  await cluster?.stop();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

type PsEntry = { name: string; host: string; state: string; pid: number };
const entriesOf = async (name: string): Promise<PsEntry[]> => ((await cluster.ferry(['ps', '--json'])).json as PsEntry[]).filter((e) => e.name === name);

/**
 * Holds an anonymous pipe with 22 unread bytes (an end of it on each side, as a pipeline stage
 * whose reader is slow would), counts in STATE/counter, and on SIGUSR1 reads what waits in the
 * pipe into STATE/pipe: the program's own view of its pipe after a move.
 */
const PIPE_HOLDER = `
import os, signal, sys, time
state = sys.argv[1]
r, w = os.pipe()
os.write(w, b"twenty-two unread byte")
os.set_blocking(r, False)
def report(_s, _f):
    try:
        data = os.read(r, 4096)
    except BlockingIOError:
        data = b""
    with open(os.path.join(state, "pipe.tmp"), "wb") as f:
        f.write(data)
    os.rename(os.path.join(state, "pipe.tmp"), os.path.join(state, "pipe"))
signal.signal(signal.SIGUSR1, report)
n = 0
while True:
    n += 1
    with open(os.path.join(state, "counter"), "w") as f:
        f.write(str(n))
    time.sleep(0.05)
`;

test('a pipe holding unread data moves with it, the bytes still waiting; a target that cannot refill a pipe is refused before the freeze', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'piped', '--json', '--', '/usr/bin/python3', '-c', PIPE_HOLDER, stateDir]);
  expect(run.code).toBe(0);
  const [before] = await waitFor('piped workload running', async () => {
    const e = await entriesOf('piped');
    return e.length === 1 && e[0].state === 'running' ? e : undefined;
  });
  await waitFor('it counts', async () => Number(await readFile(join(stateDir, 'counter'), 'utf8').catch(() => '0')) > 3);

  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; criu: { pipeData: boolean } }>;
  expect(hosts.find((h) => h.name === 'h3')!.criu.pipeData).toBe(false);
  // A target that cannot refill a pipe: refused before the freeze, naming the pipe; nothing frozen.
  const refused = await cluster.ferry(['migrate', 'piped', '--to', 'h3', '--json']);
  expect(refused.code).not.toBe(0);
  expect(refused.json.error.code).toBe('FAILED_PRECONDITION');
  expect(refused.json.error.message).toMatch(/unread data in pipes or FIFOs.*: pipe:\[\d+\] \(pid \d+ fd \d+, 22 bytes\)/);
  expect(await entriesOf('piped')).toEqual([expect.objectContaining({ host: 'h1', state: 'running', pid: before.pid })]);

  if (hosts.find((h) => h.name === 'h2')!.criu.pipeData) {
    for (const to of ['h2', 'h1']) {
      const moved = await cluster.ferry(['migrate', 'piped', '--to', to, '--json']);
      expect(moved.json).toMatchObject({ state: 'succeeded', to });
    }
    const [after] = await waitFor('piped running on h1 again', async () => {
      const e = await entriesOf('piped');
      return e.length === 1 && e[0].host === 'h1' && e[0].state === 'running' ? e : undefined;
    });
    expect(after.pid).not.toBe(before.pid);
    // The program reads its pipe: the same 22 bytes, once.
    process.kill(after.pid, 'SIGUSR1');
    const seen = await waitFor('the workload read its pipe', async () => readFile(join(stateDir, 'pipe'), 'utf8').catch(() => undefined));
    expect(seen).toBe('twenty-two unread byte');
  }
  expect((await cluster.ferry(['stop', 'piped'])).code).toBe(0);
});
