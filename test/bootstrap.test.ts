/**
 * Agent bootstrap over SSH: a throwaway cluster whose h2 agent is not started by the dev module
 * but installed by the real `ferry hosts add` through a real OpenSSH server running in h2 (ssh2
 * client, host key checked, SFTP copy, supervised process since the host has no systemd). It
 * registers, a workload migrates onto it, and `ferry hosts remove` stops it; wrong keys are refused.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrap } from '@ferry/cli';
import { clusterDataDir, dev } from '@ferry/dev-cluster';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

const NAME = 'tboot';
let cluster: TestCluster;
let state: dev.DevClusterState;
let recordsDir: string;
const workloads: CounterWorkload[] = [];

beforeAll(async () => {
  cluster = await startTestCluster(NAME, 213, { agentHosts: ['h1'], hostSshd: true });
  const s = dev.readClusterState(NAME);
  if (s === null) throw new Error('no cluster state');
  state = s;
  recordsDir = mkdtempSync(join(tmpdir(), 'ferry-boot-records-'));
});

afterAll(async () => {
  await cluster?.stop();
  for (const w of workloads) await w.remove();
  if (recordsDir) rmSync(recordsDir, { recursive: true, force: true });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const prefix = () => join(state.layout.stateDir, 'boot-h2');

/** `ferry hosts add h2 ...` with the dev cluster's paths; `keyFlags` choose the host key policy. */
function addArgs(keyFlags: string[]): string[] {
  const h2 = state.layout.hosts[1];
  const ssh = dev.hostSshFiles(state.layout);
  return [
    'hosts', 'add', 'h2', '--json',
    '--ssh', `root@${h2.address}`,
    '--key', ssh.clientKey,
    ...keyFlags,
    '--nats-url', state.hostNatsUrl,
    '--prefix', prefix(),
    '--config-dir', prefix(),
    '--data-dir', clusterDataDir(NAME),
    '--work-dir', join('/run/ferry/work', NAME, 'h2'),
    '--service-manager', 'process',
    '--state-dir', recordsDir,
    // NATS refuses anonymous clients: h2's agent gets its own credentials (hosts share this filesystem).
    ...(cluster.credentials ? ['--env', `FERRY_NATS_CREDENTIALS=${cluster.credentials.agents.h2}`] : []),
  ];
}

test('a wrong pinned fingerprint and a host missing from known_hosts are refused before anything is installed', async () => {
  const h1Key = readFileSync(join(dev.hostSshFiles(state.layout).dir, 'ssh_host_ed25519_key.h1.pub'), 'utf8').split(' ')[1];
  const wrong = bootstrap.sshFingerprint(Buffer.from(h1Key, 'base64'));
  const res = await cluster.ferry(addArgs(['--fingerprint', wrong]));
  expect(res.code).toBe(4);
  expect(res.json.error.code).toBe('FAILED_PRECONDITION');
  expect(res.json.error.message).toContain(`not the pinned ${wrong}`);

  // A known_hosts that lists only h1: h2's key is unknown, so it is refused too (never trusted on first use).
  const onlyH1 = join(recordsDir, 'known_hosts_h1');
  const lines = readFileSync(dev.hostSshFiles(state.layout).knownHosts, 'utf8').split('\n');
  writeFileSync(onlyH1, `${lines.filter((l) => l.startsWith(`${state.layout.hosts[0].address} `)).join('\n')}\n`);
  const unknown = await cluster.ferry(addArgs(['--known-hosts', onlyH1]));
  expect(unknown.code).toBe(4);
  expect(unknown.json.error.message).toContain('is not in known_hosts');
  expect(existsSync(prefix())).toBe(false);
  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.json.map((h: { name: string }) => h.name)).toEqual(['h1']);
});

test('hosts add installs h2 over SSH, it registers, a workload migrates there, hosts remove stops it', async () => {
  const added = await cluster.ferry(addArgs(['--known-hosts', dev.hostSshFiles(state.layout).knownHosts]));
  expect(added.stderr).toBe('');
  expect(added.code).toBe(0);
  expect(added.json).toMatchObject({ name: 'h2', serviceManager: 'process', prefix: prefix() });
  expect(added.json.criu).toMatch(/^[4-9]\./);
  expect(added.json.bundleBytes).toBeGreaterThan(100_000);
  // What was installed: the bundle, the env file and the supervisor, and the agent runs from them.
  expect(existsSync(join(prefix(), 'node_modules/@ferry/agent/dist/main.js'))).toBe(true);
  expect(readFileSync(join(prefix(), 'agent.env'), 'utf8')).toContain('FERRY_HOST="h2"');
  const supervisorPid = Number(readFileSync(join(prefix(), 'supervisor.pid'), 'utf8'));
  const agentPid = Number(readFileSync(join(prefix(), 'agent.pid'), 'utf8'));
  expect(readFileSync(`/proc/${agentPid}/cmdline`, 'utf8')).toContain(join(prefix(), 'node_modules/@ferry/agent/dist/main.js'));
  // It runs inside h2 (its network namespace), started through h2's sshd, not by the dev module.
  expect(readFileSync(`/proc/${agentPid}/environ`, 'utf8')).toContain(`FERRY_ADDRESS=${state.layout.hosts[1].address}`);
  expect(dev.readClusterState(NAME)?.processes.some((p) => p.role === 'agent' && p.host === 'h2')).toBe(false);

  const hosts = await cluster.ferry(['hosts', '--json']);
  expect(hosts.json.find((h: { name: string }) => h.name === 'h2')).toMatchObject({ state: 'alive', address: state.layout.hosts[1].address });

  // A workload migrates from the dev-started h1 to the bootstrapped h2, memory and counter intact.
  const w = await CounterWorkload.create();
  workloads.push(w);
  expect((await cluster.ferry(['run', '--host', 'h1', '--name', 'boot', '--json', '--', ...w.argv(16)])).code).toBe(0);
  const counterBefore = await w.advancesPast(10, 30_000);
  const migrated = await cluster.ferry(['migrate', 'boot', '--to', 'h2', '--json']);
  expect(migrated.code).toBe(0);
  expect(migrated.json).toMatchObject({ workload: 'boot', to: 'h2', state: 'succeeded' });
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.starts()).toBe(1);
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>;
  const entry = ps.find((e) => e.name === 'boot');
  expect(entry?.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([entry?.pid]);
  expect(await w.verifyMemory(entry?.pid as number)).toBe('OK');

  // Removing a host that still runs a workload is refused; after the workload stops it goes.
  const refused = await cluster.ferry(['hosts', 'remove', 'h2', '--json', '--state-dir', recordsDir]);
  expect(refused.code).toBe(4);
  expect(refused.json.error.message).toContain('ferry drain h2');
  expect((await cluster.ferry(['stop', 'boot'])).code).toBe(0);
  await waitFor('h2 has no workloads', async () => {
    const list = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; workloadCount: number }>;
    return list.find((h) => h.name === 'h2')?.workloadCount === 0;
  });
  const removed = await cluster.ferry(['hosts', 'remove', 'h2', '--json', '--state-dir', recordsDir]);
  expect(removed.stderr).toBe('');
  expect(removed.code).toBe(0);
  expect(removed.json).toEqual({ removed: 'h2', prefix: prefix() });
  expect(isAlive(agentPid)).toBe(false);
  expect(isAlive(supervisorPid)).toBe(false);
  expect(existsSync(prefix())).toBe(false);
  expect(existsSync(join(recordsDir, 'h2.json'))).toBe(false);
  // h1 is untouched.
  const after = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; state: string }>;
  expect(after.find((h) => h.name === 'h1')?.state).toBe('alive');
});
