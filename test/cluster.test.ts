/**
 * The local cluster and the CLI's contract: hosts register and heartbeat, a lost agent shows as
 * lost and comes back when started again, workloads run where asked, JSON shapes and error codes
 * are as documented, and `down` leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dev, startLocalHost } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { waitFor } from './helpers/workload';

jest.setTimeout(180_000);

const CLUSTER = 'tclu';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 203, { hosts: 3 });
});

afterAll(async () => {
  await cluster?.stop();
});

const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));

test('every host registered with its CRIU probe; hosts --json has the documented shape', async () => {
  const res = await cluster.ferry(['hosts', '--json']);
  expect(res.code).toBe(0);
  expect(res.json.map((h: { name: string }) => h.name)).toEqual(['h1', 'h2', 'h3']);
  for (const h of res.json) {
    expect(h).toMatchObject({ state: 'alive', cordoned: false });
    expect(h.address).toMatch(/^198\.1[89]\./);
    expect(h.criu.version).toMatch(/^4\./);
    expect(h.criu.usable).toBe(true);
    expect(typeof h.criu.needsFaultInjection).toBe('boolean');
  }
});

test('run puts a workload on the asked host; ps --json shows it with a live pid', async () => {
  const run = await cluster.ferry(['run', '--host', 'h2', '--name', 'x', '--json', '--', 'sleep', '1000']);
  expect(run.code).toBe(0);
  const ps = await cluster.ferry(['ps', '--json']);
  expect(ps.code).toBe(0);
  const [x] = ps.json;
  expect(Object.keys(x).sort()).toEqual(['host', 'localDirs', 'name', 'ownNetwork', 'ownRoot', 'pid', 'rssBytes', 'state']);
  // Its own root; the host's network namespace (only a --user workload with an address has its own).
  expect(x).toMatchObject({ name: 'x', host: 'h2', state: 'running', ownRoot: true, ownNetwork: false });
  expect(alive(x.pid)).toBe(true);
  // The pid is the init of the workload's own PID namespace, in h2's network namespace.
  const ns = (pid: number | 'self', kind: string) => execFileSync('readlink', [`/proc/${pid}/ns/${kind}`]).toString().trim();
  expect(ns(x.pid, 'pid')).not.toBe(ns('self', 'pid'));
  const h2 = dev.readClusterState(CLUSTER)!.processes.find((p) => p.role === 'agent' && p.host === 'h2')!;
  expect(ns(x.pid, 'net')).toBe(ns(h2.pid, 'net'));
  // Its own mount namespace (its own /proc and root), in the host's user namespace (it runs as root).
  expect(ns(x.pid, 'mnt')).not.toBe(ns(h2.pid, 'mnt'));
  expect(ns(x.pid, 'user')).toBe(ns(h2.pid, 'user'));
  // A second workload of the same name is a CONFLICT anywhere in the cluster.
  const dup = await cluster.ferry(['run', '--host', 'h1', '--name', 'x', '--json', '--', 'sleep', '1']);
  expect(dup.code).toBe(5);
  expect(dup.json.error.code).toBe('CONFLICT');
});

test('ps shows an argv with terminal escape sequences escaped, never raw (a hostile agent or workload cannot drive the terminal)', async () => {
  // The argv an agent reports is shown as it is given; here it tries to clear the screen and retitle the window.
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'esc', '--json', '--', 'sh', '-c', 'sleep 1000', '\u001b[2J\u001b]0;pwned\u0007']);
  expect(run.code).toBe(0);
  const ps = await cluster.ferry(['ps']);
  expect(ps.code).toBe(0);
  const line = ps.stdout.split('\n').find((l) => l.startsWith('esc '));
  expect(line).toContain('sh -c sleep 1000 \\x1b[2J\\x1b]0;pwned\\x07');
  // Nothing but printable text and the newlines between rows reached the terminal.
  expect([...ps.stdout].filter((c) => c !== '\n' && (c.charCodeAt(0) < 0x20 || (c.charCodeAt(0) >= 0x7f && c.charCodeAt(0) <= 0x9f)))).toEqual([]);
  expect((await cluster.ferry(['stop', 'esc'])).code).toBe(0);
});

test('errors: unknown host NOT_FOUND, bad name INVALID_ARGUMENT, unknown workload NOT_FOUND', async () => {
  const noHost = await cluster.ferry(['run', '--host', 'h9', '--name', 'y', '--json', '--', 'true']);
  expect(noHost.code).toBe(3);
  expect(noHost.json).toEqual({ error: { code: 'NOT_FOUND', message: expect.stringContaining('h9') } });
  const badName = await cluster.ferry(['run', '--host', 'h1', '--name', 'Bad.Name', '--json', '--', 'true']);
  expect(badName.code).toBe(2);
  expect(badName.json.error.code).toBe('INVALID_ARGUMENT');
  const stop = await cluster.ferry(['stop', 'nothing', '--json']);
  expect(stop.code).toBe(3);
  const status = await cluster.ferry(['status', 'm-nope', '--json']);
  expect(status.json.error.code).toBe('NOT_FOUND');
});

test('a killed agent is reported lost within a few seconds; its workloads keep running', async () => {
  const { pid } = (await cluster.ferry(['ps', '--json'])).json.find((w: { name: string }) => w.name === 'x');
  const killedAt = Date.now();
  await dev.killHost(CLUSTER, 'h2');
  await waitFor('h2 lost', async () => {
    const hosts = (await cluster.ferry(['hosts', '--json'])).json;
    return hosts.find((h: { name: string; state: string }) => h.name === 'h2' && h.state === 'lost');
  }, 15_000);
  expect(Date.now() - killedAt).toBeLessThan(10_000);
  expect(alive(pid)).toBe(true);
  // A command for the lost host is refused, not hung.
  const run = await cluster.ferry(['run', '--host', 'h2', '--name', 'z', '--json', '--', 'true']);
  expect(run.json.error.code).toBe('UNAVAILABLE');
});

test('a killed host started again (`ferry dev start`) is alive in its namespaces and runs workloads', async () => {
  // The previous test killed h2's agent; kill it here if run alone.
  const before = dev.readClusterState(CLUSTER)!.processes.find((p) => p.role === 'agent' && p.host === 'h2')!;
  if (alive(before.pid)) await dev.killHost(CLUSTER, 'h2');
  const started = await startLocalHost(CLUSTER, 'h2');
  expect(started.pid).not.toBe(before.pid);
  expect(alive(started.pid)).toBe(true);
  // Started as `dev up` starts agents: in h2's network, mount and UTS namespaces, recorded in the cluster state.
  const state = dev.readClusterState(CLUSTER)!;
  const h2 = state.layout.hosts.find((h) => h.name === 'h2')!;
  const nsInode = (pid: number, kind: string) => statSync(`/proc/${pid}/ns/${kind}`).ino;
  expect(nsInode(started.pid, 'net')).toBe(statSync(`/run/netns/${h2.netns}`).ino);
  expect(nsInode(started.pid, 'mnt')).toBe(statSync(h2.mountNsFile).ino);
  expect(nsInode(started.pid, 'uts')).toBe(statSync(h2.utsNsFile).ino);
  expect(state.processes.filter((p) => p.role === 'agent' && p.host === 'h2')).toEqual([started]);
  const hosts = (await cluster.ferry(['hosts', '--json'])).json;
  expect(hosts.find((h: { name: string }) => h.name === 'h2')).toMatchObject({ state: 'alive' });
  // A second start while it runs is refused.
  expect(await startLocalHost(CLUSTER, 'h2').catch((e: { code?: string }) => e.code)).toBe('FAILED_PRECONDITION');
  const run = await cluster.ferry(['run', '--host', 'h2', '--name', 'back', '--json', '--', 'sleep', '1000']);
  expect(run.code).toBe(0);
  const back = (await cluster.ferry(['ps', '--json'])).json.find((w: { name: string }) => w.name === 'back');
  expect(back).toMatchObject({ host: 'h2', state: 'running' });
  expect(alive(back.pid)).toBe(true);
  expect(nsInode(back.pid, 'net')).toBe(nsInode(started.pid, 'net'));
});

test('down removes every process, namespace, link and mount it made', async () => {
  const state = dev.readClusterState(CLUSTER)!;
  const { pid: workloadPid } = (await cluster.ferry(['ps', '--json'])).json.find((w: { name: string }) => w.name === 'x');
  await cluster.stop();
  for (const p of state.processes) expect(alive(p.pid)).toBe(false);
  expect(alive(workloadPid)).toBe(false);
  const netns = execFileSync('ip', ['netns', 'list']).toString();
  for (const h of state.layout.hosts) expect(netns).not.toContain(h.netns);
  expect(execFileSync('ip', ['-o', 'link']).toString()).not.toContain(state.layout.bridge);
  expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(`/run/ferry/ns/${CLUSTER}`);
  expect(existsSync(`/run/ferry/work/${CLUSTER}`)).toBe(false);
});
