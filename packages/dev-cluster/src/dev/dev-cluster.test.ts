import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { isConflict, isFailedPrecondition, isUnavailable } from '@ferry/protocol';
import {
  DevClusterInput,
  DevClusterState,
  devHostContexts,
  hostExec,
  killHost,
  readClusterState,
  restartAgent,
  startDevCluster,
  startProcessInHost,
  stopDevCluster,
} from './index';
import { findProcessesInNamespaces, namespaceInode } from './namespace-processes';
import { ProcessIdentity, identifyProcess, isProcessAlive } from './process-identity';

// Real namespaces, bridge, nats-server and redis-server: needs root.
jest.setTimeout(60_000);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForFiles(files: string[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!files.every((f) => fs.existsSync(f) && fs.statSync(f).size > 0)) {
    if (Date.now() > deadline) throw new Error(`not written: ${files.filter((f) => !fs.existsSync(f)).join(', ')}`);
    await sleep(50);
  }
}

interface TestCluster {
  name: string;
  markerDir: string;
  input: DevClusterInput;
}

/** A cluster with stub commands: the agent writes its hostname and eth0 address, then sleeps. */
async function testCluster(hosts: number): Promise<TestCluster> {
  const name = `t${crypto.randomBytes(3).toString('hex')}`;
  const markerDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dev-test-'));
  const agentScript = 'hostname > "$MARKER_DIR/$HOST.hostname"; ip -4 -o addr show dev eth0 > "$MARKER_DIR/$HOST.addr"; exec sleep 1000';
  const input: DevClusterInput = {
    name,
    hosts,
    // 198.19.x.0/24, away from the 198.18.0.0/24 of a default `ferry dev up`.
    subnetIndex: 256 + crypto.randomInt(256),
    natsPort: await freePort(),
    redisPort: await freePort(),
    stopGraceMs: 1_000,
    readyTimeoutMs: 15_000,
    coordinatorCommand: () => ({ argv: ['sleep', '1000'], env: {} }),
    agentCommand: (host) => ({
      argv: ['sh', '-c', agentScript],
      env: { MARKER_DIR: markerDir, HOST: host.name, NATS_URL: host.natsUrl },
    }),
    waitUntilReady: (names) => waitForFiles(names.flatMap((h) => [`${markerDir}/${h}.hostname`, `${markerDir}/${h}.addr`])),
  };
  return { name, markerDir, input };
}

function namespaceLinkInode(pid: number, kind: string): number {
  return Number(/\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/${kind}`))![1]);
}

/** Asserts nothing of the cluster is left: processes, netns, links, mounts, state. */
function expectNothingLeft(state: DevClusterState, extraProcesses: ProcessIdentity[] = []): void {
  for (const p of [...state.processes, ...extraProcesses]) expect(isProcessAlive(p)).toBe(false);
  const netnsList = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  for (const host of state.layout.hosts) {
    expect(netnsList.split('\n').map((l) => l.split(' ')[0])).not.toContain(host.netns);
    expect(links).not.toContain(`${host.vethRoot}@`);
    expect(links).not.toContain(`${host.vethRoot}:`);
  }
  expect(links).not.toContain(`${state.layout.bridge}:`);
  expect(mountinfo).not.toContain(state.layout.namespaceDir);
  // Hosts' private /srv lived in their mount namespaces only.
  expect(mountinfo).not.toMatch(/ ferry-h\d+-local /);
  expect(mountinfo).not.toContain(`/run/netns/${state.layout.hosts[0].netns} `);
  expect(fs.existsSync(state.layout.stateDir)).toBe(false);
  expect(fs.existsSync(state.layout.namespaceDir)).toBe(false);
  expect(readClusterState(state.name)).toBeNull();
}

describe('dev cluster (real namespaces)', () => {
  let cluster: TestCluster;
  let state: DevClusterState;
  const extra: ProcessIdentity[] = [];

  beforeAll(async () => {
    cluster = await testCluster(2);
    state = await startDevCluster(cluster.input);
  });

  afterAll(async () => {
    await stopDevCluster(cluster.name).catch(() => undefined);
    fs.rmSync(cluster.markerDir, { recursive: true, force: true });
  });

  it('records everything it started', () => {
    expect(state.status).toBe('running');
    expect(readClusterState(cluster.name)).toEqual(state);
    expect(state.processes.map((p) => `${p.role}${p.host ?? ''}`).sort()).toEqual(
      ['agenth1', 'agenth2', 'coordinator', 'nats', 'redis', 'sshdstorage'].sort(),
    );
    for (const p of state.processes) {
      expect(isProcessAlive(p)).toBe(true);
      expect(fs.existsSync(p.logPath)).toBe(true);
    }
  });

  it('runs each agent in its own host: netns, mount ns, hostname, address', () => {
    for (const host of state.layout.hosts) {
      const agent = state.processes.find((p) => p.host === host.name)!;
      expect(namespaceLinkInode(agent.pid, 'net')).toBe(namespaceInode(`/run/netns/${host.netns}`));
      expect(namespaceLinkInode(agent.pid, 'mnt')).toBe(namespaceInode(host.mountNsFile));
      expect(namespaceLinkInode(agent.pid, 'uts')).toBe(namespaceInode(host.utsNsFile));
      expect(namespaceLinkInode(agent.pid, 'net')).not.toBe(namespaceLinkInode(process.pid, 'net'));
      expect(fs.readFileSync(`${cluster.markerDir}/${host.name}.hostname`, 'utf8').trim()).toBe(host.name);
      expect(fs.readFileSync(`${cluster.markerDir}/${host.name}.addr`, 'utf8')).toContain(`inet ${host.address}/24`);
    }
    expect(os.hostname()).not.toMatch(/^h\d+$/);
  });

  it('gives each host a private /srv (a tmpfs of its own) while every other path stays shared', async () => {
    const probe = `probe-${cluster.name}`;
    await hostExec(cluster.name, 'h1', ['sh', '-c', `echo h1 > /srv/${probe} && echo shared > ${cluster.markerDir}/${probe}`]);
    expect((await hostExec(cluster.name, 'h1', ['cat', `/srv/${probe}`])).stdout).toBe('h1\n');
    await expect(hostExec(cluster.name, 'h2', ['test', '-e', `/srv/${probe}`])).rejects.toThrow();
    expect(fs.existsSync(`/srv/${probe}`)).toBe(false);
    expect((await hostExec(cluster.name, 'h2', ['cat', `${cluster.markerDir}/${probe}`])).stdout).toBe('shared\n');
    for (const host of state.layout.hosts) {
      const mount = await hostExec(cluster.name, host.name, ['findmnt', '-n', '-o', 'FSTYPE,SOURCE', '/srv']);
      expect(mount.stdout.trim().split(/\s+/)).toEqual(['tmpfs', `ferry-${host.name}-local`]);
    }
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toMatch(/ ferry-h\d+-local /);
  });

  it('opens agent stdio inside the host mount namespace (CRIU needs that of workloads)', () => {
    const agent = state.processes.find((p) => p.host === 'h1')!;
    expect(fs.readlinkSync(`/proc/${agent.pid}/fd/1`)).toBe(agent.logPath);
    const mountId = /mnt_id:\s*(\d+)/.exec(fs.readFileSync(`/proc/${agent.pid}/fdinfo/1`, 'utf8'))![1];
    const hostMountIds = fs
      .readFileSync(`/proc/${agent.pid}/mountinfo`, 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[0]);
    expect(hostMountIds).toContain(mountId);
    expect(fs.readlinkSync(`/proc/${agent.pid}/fd/0`)).toBe('/dev/null');
  });

  it('lets hosts reach nats (8 MB payloads) and redis on the bridge, with lo up and no way out', async () => {
    const firstReply = (port: number, send: string) =>
      `const s=require('net').connect(${port},'${state.layout.bridgeAddress}');` +
      `s.on('connect',()=>s.write(${JSON.stringify(send)}));` +
      `s.on('data',d=>{process.stdout.write(d.toString());s.destroy();});` +
      `s.on('error',e=>{console.error(e.message);process.exit(1);});`;
    const nats = await hostExec(cluster.name, 'h1', ['node', '-e', firstReply(state.natsPort, '')]);
    expect(nats.stdout).toMatch(/^INFO /);
    expect(nats.stdout).toContain('"max_payload":8388608');
    const redis = await hostExec(cluster.name, 'h2', ['node', '-e', firstReply(state.redisPort, 'PING\r\n')]);
    expect(redis.stdout).toBe('+PONG\r\n');

    const routes = await hostExec(cluster.name, 'h1', ['ip', 'route']);
    expect(routes.stdout).not.toContain('default');
    const lo = await hostExec(cluster.name, 'h2', ['ip', '-o', 'link', 'show', 'lo']);
    expect(lo.stdout).toContain('LOWER_UP');
    const ping = await hostExec(cluster.name, 'h1', ['node', '-e', firstReply(state.redisPort, 'PING\r\n').replace(state.layout.bridgeAddress, state.layout.hosts[1].address)]).catch((e: Error) => e);
    expect(ping).toBeInstanceOf(Error); // redis is not on h2's address: connection refused, proving h1 reaches h2
    expect((ping as Error).message).toContain('ECONNREFUSED');
    expect(state.natsUrl).toBe(`nats://127.0.0.1:${state.natsPort}`);
    expect(devHostContexts(state)[1]).toEqual({
      name: 'h2',
      address: state.layout.hosts[1].address,
      natsUrl: `nats://${state.layout.bridgeAddress}:${state.natsPort}`,
      redisUrl: `redis://${state.layout.bridgeAddress}:${state.redisPort}`,
      // NATS authentication is on by default: each agent gets its own credentials file.
      natsCredentialsFile: state.credentials!.agents.h2,
    });
  });

  it('refuses a second up of the same cluster', async () => {
    const err = await startDevCluster(cluster.input).catch((e: unknown) => e);
    expect(isConflict(err)).toBe(true);
    expect((err as Error).message).toContain('already running');
    expect(state.processes.every(isProcessAlive)).toBe(true);
  });

  it('starts processes inside a host that are found through their namespaces', async () => {
    // The shell backgrounds a sleep and execs another: the backgrounded one is nobody's child of ours.
    const started = await startProcessInHost(cluster.name, 'h2', ['sh', '-c', 'sleep 1001 & exec sleep 1002']);
    extra.push(started);
    const netnsInode = namespaceInode(`/run/netns/${state.layout.hosts[1].netns}`)!;
    let inHost: ProcessIdentity[] = [];
    for (let i = 0; i < 40 && inHost.length < 3; i++) {
      await sleep(50);
      inHost = findProcessesInNamespaces(new Set([netnsInode]));
    }
    const agent = state.processes.find((p) => p.host === 'h2')!;
    expect(inHost.map((p) => p.pid).sort()).toEqual(expect.arrayContaining([agent.pid, started.pid]));
    expect(inHost).toHaveLength(3);
    extra.push(...inHost.filter((p) => p.pid !== agent.pid && p.pid !== started.pid));
    expect(fs.readFileSync(`/proc/${started.pid}/cmdline`, 'utf8')).toBe('sleep\u00001002\u0000');
  });

  it('killHost kills only that agent, and restartAgent brings it back', async () => {
    const killed = await killHost(cluster.name, 'h2');
    expect(killed.host).toBe('h2');
    expect(isProcessAlive(killed)).toBe(false);
    for (const p of state.processes.filter((p) => p.pid !== killed.pid)) expect(isProcessAlive(p)).toBe(true);
    for (const p of extra) expect(isProcessAlive(p)).toBe(true);
    expect(isFailedPrecondition(await killHost(cluster.name, 'h2').catch((e: unknown) => e))).toBe(true);

    fs.rmSync(`${cluster.markerDir}/h2.hostname`);
    const again = await restartAgent(cluster.name, 'h2', cluster.input.agentCommand(devHostContexts(state)[1]));
    await waitForFiles([`${cluster.markerDir}/h2.hostname`]);
    expect(isProcessAlive(again)).toBe(true);
    expect(namespaceLinkInode(again.pid, 'net')).toBe(namespaceInode(`/run/netns/${state.layout.hosts[1].netns}`));
    const recorded = readClusterState(cluster.name)!.processes.filter((p) => p.host === 'h2');
    expect(recorded).toEqual([again]);
    state = readClusterState(cluster.name)!;
  });

  it('stopDevCluster leaves nothing behind, workloads included, and is idempotent', async () => {
    await stopDevCluster(cluster.name, { graceMs: 1_000 });
    expectNothingLeft(state, extra);
    await expect(stopDevCluster(cluster.name)).resolves.toBeUndefined();
  });
});

describe('dev cluster start-up failures', () => {
  it('tears down what it made when an agent dies during start-up', async () => {
    const cluster = await testCluster(2);
    const nameAtStart = cluster.name;
    let recorded: DevClusterState | null = null;
    const err = await startDevCluster({
      ...cluster.input,
      agentCommand: (host) =>
        host.name === 'h2'
          ? { argv: ['sh', '-c', 'sleep 0.3; echo agent-broke >&2; exit 3'], env: {} }
          : cluster.input.agentCommand(host),
      waitUntilReady: async () => {
        recorded = readClusterState(nameAtStart);
        await new Promise(() => undefined); // never ready
      },
    }).catch((e: unknown) => e);
    fs.rmSync(cluster.markerDir, { recursive: true, force: true });
    expect(isUnavailable(err)).toBe(true);
    expect((err as Error).message).toContain('agent on h2');
    expect((err as { details: string[] }).details.join('\n')).toContain('agent-broke');
    expect(recorded).not.toBeNull();
    expectNothingLeft(recorded!);
    expect(fs.existsSync(`/proc/${recorded!.processes.find((p) => p.role === 'nats')!.pid}`)).toBe(false);
  });

  it('cleans up a crashed cluster (all processes gone) before starting again', async () => {
    const cluster = await testCluster(1);
    try {
      const first = await startDevCluster(cluster.input);
      // Simulate a crash: every recorded process dies, the namespaces and state file stay.
      for (const p of first.processes) process.kill(p.pid, 'SIGKILL');
      for (let i = 0; i < 100 && first.processes.some(isProcessAlive); i++) await sleep(20);
      fs.rmSync(`${cluster.markerDir}/h1.hostname`);
      const second = await startDevCluster(cluster.input);
      expect(second.processes.every(isProcessAlive)).toBe(true);
      expect(second.processes.map((p) => p.pid)).not.toEqual(expect.arrayContaining(first.processes.map((p) => p.pid)));
      await stopDevCluster(cluster.name);
      expectNothingLeft(second);
    } finally {
      await stopDevCluster(cluster.name).catch(() => undefined);
      fs.rmSync(cluster.markerDir, { recursive: true, force: true });
    }
  });
});

describe('identifyProcess', () => {
  it('tells a live process from a gone one', () => {
    expect(identifyProcess(process.pid)).not.toBeNull();
    expect(isProcessAlive({ pid: process.pid, startTime: '1' })).toBe(false);
  });
});
