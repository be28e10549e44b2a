/**
 * TCP connections that survive migration: a TCP echo server with its own service address
 * (`ferry run --address`) and a client on a third host streaming numbered lines through it. The
 * server migrates h1 -> h2 (CRIU's TCP repair, the address moving with it, a gratuitous ARP), and a
 * rollback (a restore that fails on h1) leaves address and connection on h2; the client checks every
 * echo, in order, exactly once, and never reconnects. What cannot move (a connection to a peer on
 * the same host, a connection without a service address) fails the migration before anything is
 * frozen. Real CRIU, NATS, Redis, three namespace hosts.
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dev } from '@ferry/dev-cluster';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

const CLUSTER = 'ttcp';
const PORT = 7000;
const SERVER = join(REPO, 'test/fixtures/tcp-echo-server.py');
const CLIENT = join(REPO, 'test/fixtures/tcp-stream-client.py');
// h1 restores through the failing-restore wrapper while its trigger file exists (for the rollback).
const WRAPPER_DIR = mkdtempSync(join(tmpdir(), 'ferry-criu-wrapper-'));
const FAIL_RESTORE_TRIGGER = join(WRAPPER_DIR, 'fail-restore');
copyFileSync(join(REPO, 'test/fixtures/criu-failing-restore.sh'), join(WRAPPER_DIR, 'criu'));
let cluster: TestCluster;
let scratch: string;
let serviceIp: string;

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 236, {
    hosts: 3,
    agentEnvFor: (host): Record<string, string> => (host === 'h1' ? { FERRY_CRIU_PATH: join(WRAPPER_DIR, 'criu') } : {}),
  });
  scratch = mkdtempSync(join(tmpdir(), 'ferry-tcp-'));
  await chmod(scratch, 0o755);
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; address: string }>;
  // The service address: in the cluster's /24, next to the hosts' own.
  serviceIp = hosts[0].address.replace(/\.\d+$/, '.100');
});

afterAll(async () => {
  await cluster?.stop();
  await rm(WRAPPER_DIR, { recursive: true, force: true });
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

interface ClientStatus {
  ok: boolean;
  sent: number;
  echoed: number;
  maxGapMs: number;
  text: string;
}

async function clientStatus(file: string): Promise<ClientStatus> {
  const text = (await readFile(file, 'utf8').catch(() => '')).trim();
  const [word, sent, echoed, gap] = text.split(' ');
  return { ok: word === 'ok', sent: Number(sent), echoed: Number(echoed), maxGapMs: Number(gap), text };
}

/** Waits until the client has echoed `past` more lines than now; fails at once on its first error. */
async function clientAdvances(file: string, more = 50): Promise<ClientStatus> {
  const start = await clientStatus(file);
  expect(start.text).toMatch(/^ok /);
  return waitFor(`client past ${start.echoed + more} echoes`, async () => {
    const s = await clientStatus(file);
    if (!s.ok) throw new Error(`client failed: ${s.text}`);
    return s.echoed >= start.echoed + more ? s : undefined;
  }, 30_000);
}

async function addressesOf(host: string): Promise<string[]> {
  const { stdout } = await dev.hostExec(CLUSTER, host, ['ip', '-4', '-o', 'addr', 'show']);
  return stdout.split('\n').map((l) => l.split(/\s+/)[3]).filter(Boolean).map((a) => a.split('/')[0]);
}

async function nftTables(host: string): Promise<string> {
  return (await dev.hostExec(CLUSTER, host, ['nft', 'list', 'tables'])).stdout.trim();
}

/** One UDP datagram from h3 to the echo server and back (its UDP socket migrates with it). */
async function udpEcho(payload: string): Promise<string> {
  const script = `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
for _ in range(5):
    s.sendto(b"${payload}", ("${serviceIp}", ${PORT}))
    try:
        print(s.recvfrom(100)[0].decode()); break
    except socket.timeout:
        pass`;
  return (await dev.hostExec(CLUSTER, 'h3', ['python3', '-c', script], { timeoutMs: 15_000 })).stdout.trim();
}

async function hostOf(name: string): Promise<string> {
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; address?: string }>;
  const entries = ps.filter((w) => w.name === name);
  expect(entries).toHaveLength(1);
  return entries[0].host;
}

/**
 * The echo server runs on `host` alone: its address there and not on `other`, CRIU's network lock
 * gone from both hosts, still the one connection it ever accepted, its UDP socket answering.
 */
async function expectEchoServerOn(host: string, other: string, udpPayload: string): Promise<void> {
  expect(await hostOf('echo')).toBe(host);
  expect(await addressesOf(host)).toContain(serviceIp);
  expect(await addressesOf(other)).not.toContain(serviceIp);
  expect(await nftTables('h1')).toBe('');
  expect(await nftTables('h2')).toBe('');
  expect((await readFile(join(scratch, 'a', 'server.log'), 'utf8')).match(/^accepted /gm)).toHaveLength(1);
  expect(await udpEcho(udpPayload)).toBe(udpPayload);
}

test('an echo server migrates h1 -> h2 under a streaming client: never reset, nothing lost or repeated', async () => {
  const dir = join(scratch, 'a');
  await mkdir(dir, { mode: 0o755 });
  const serverLog = join(dir, 'server.log');
  const status = join(dir, 'client.status');
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'echo', '--address', `${serviceIp}/24`, '--json', '--',
    '/usr/bin/python3', SERVER, serviceIp, String(PORT), serverLog]);
  expect(run.code).toBe(0);
  expect(run.json).toMatchObject({ host: 'h1', address: `${serviceIp}/24` });
  expect(await addressesOf('h1')).toContain(serviceIp);
  await waitFor('server listening', async () => (await readFile(serverLog, 'utf8').catch(() => '')).includes('listening'));
  const client = await cluster.ferry(['run', '--host', 'h3', '--name', 'client', '--', '/usr/bin/python3', CLIENT, serviceIp, String(PORT), status]);
  expect(client.code).toBe(0);
  await waitFor('client streaming', async () => (await clientStatus(status)).echoed > 20);

  const res = await cluster.ferry(['migrate', 'echo', '--to', 'h2', '--json']);
  expect(res.stderr).toBe('');
  expect(res.json).toMatchObject({ workload: 'echo', from: 'h1', to: 'h2', state: 'succeeded' });
  expect(res.code).toBe(0);
  // The same connection carries on: every echo in order (the client checks), none lost, none twice.
  const after = await clientAdvances(status);
  expect(after.ok).toBe(true);
  expect(after.sent - after.echoed).toBeLessThan(5);
  // The address moved, CRIU's network lock is gone from both hosts, its UDP socket came along too.
  await expectEchoServerOn('h2', 'h1', 'after-migration');
});

test('a rollback (the restore fails on h1) leaves address and connection on h2, intact', async () => {
  const status = join(scratch, 'a', 'client.status');
  await writeFile(FAIL_RESTORE_TRIGGER, '');
  try {
    const res = await cluster.ferry(['migrate', 'echo', '--to', 'h1', '--json']);
    expect(res.json).toMatchObject({ workload: 'echo', state: 'rolled-back', error: { code: 'RESTORE_FAILED' } });
  } finally {
    await rm(FAIL_RESTORE_TRIGGER, { force: true });
  }
  const after = await clientAdvances(status);
  expect(after.ok).toBe(true);
  await expectEchoServerOn('h2', 'h1', 'after-rollback');
});

test('post-copy: the echo server moves h2 -> h1 and back under the streaming client, its memory after it: never reset, nothing lost or repeated', async () => {
  const status = join(scratch, 'a', 'client.status');
  const res = await cluster.ferry(['migrate', 'echo', '--to', 'h1', '--restore', 'post-copy', '--json']);
  expect(res.stderr).toBe('');
  expect(res.json).toMatchObject({ workload: 'echo', from: 'h2', to: 'h1', state: 'succeeded', restore: 'post-copy' });
  const after = await clientAdvances(status);
  expect(after.ok).toBe(true);
  expect(after.sent - after.echoed).toBeLessThan(5);
  await expectEchoServerOn('h1', 'h2', 'after-post-copy');
  // And back, where the tests after this one expect it.
  const back = await cluster.ferry(['migrate', 'echo', '--to', 'h2', '--restore', 'post-copy', '--json']);
  expect(back.json).toMatchObject({ from: 'h1', to: 'h2', state: 'succeeded' });
  expect((await clientAdvances(status)).ok).toBe(true);
  await expectEchoServerOn('h2', 'h1', 'after-post-copy-back');
});

test('what cannot move fails before anything is frozen: a peer on the same host, a connection without a service address', async () => {
  const dir = join(scratch, 'b');
  await mkdir(dir, { mode: 0o755 });
  const status = join(dir, 'client.status');
  // A second client, on h2 beside the server: that connection cannot leave h2 in one piece.
  const near = await cluster.ferry(['run', '--host', 'h2', '--name', 'near', '--', '/usr/bin/python3', CLIENT, serviceIp, String(PORT), status]);
  expect(near.code).toBe(0);
  await waitFor('near client streaming', async () => (await clientStatus(status)).echoed > 20);

  const server = await cluster.ferry(['migrate', 'echo', '--to', 'h1', '--json']);
  expect(server.code).toBe(4);
  expect(server.json).toMatchObject({ state: 'rolled-back', error: { code: 'FAILED_PRECONDITION' } });
  expect(server.json.error.message).toMatch(/peer on the same host/);
  // Refused by the pre-flight: never frozen, nothing dumped or sent.
  expect(server.json.downtimeMs).toBe(0);
  expect(server.json.phases.dumpMs).toBe(0);
  expect(server.json.bytesTransferred).toBe(0);

  // The client on h3 has no service address: its end of the connection is h3's own address, which stays.
  const client = await cluster.ferry(['migrate', 'client', '--to', 'h1', '--json']);
  expect(client.code).toBe(4);
  expect(client.json.error.message).toMatch(/needs a service address/);

  // None was frozen: both clients stream on, everything is where it was.
  await clientAdvances(status);
  await clientAdvances(join(scratch, 'a', 'client.status'));
  expect(await hostOf('echo')).toBe('h2');
  expect(await hostOf('near')).toBe('h2');
  expect(await hostOf('client')).toBe('h3');
});

test('an address already taken in the cluster is refused with CONFLICT; a malformed one with INVALID_ARGUMENT', async () => {
  const taken = await cluster.ferry(['run', '--host', 'h1', '--name', 'dup', '--address', `${serviceIp}/24`, '--json', '--', '/bin/sleep', '60']);
  expect(taken.code).toBe(5);
  expect(taken.json.error.code).toBe('CONFLICT');
  const bad = await cluster.ferry(['run', '--host', 'h1', '--name', 'dup', '--address', '198.18.0.300/24', '--json', '--', '/bin/sleep', '60']);
  expect(bad.code).toBe(2);
  expect(bad.json.error.code).toBe('INVALID_ARGUMENT');
  // Stopping a workload takes its address off the host.
  await sleep(100);
  for (const name of ['near', 'client', 'echo']) expect((await cluster.ferry(['stop', name])).code).toBe(0);
  expect(await addressesOf('h2')).not.toContain(serviceIp);
});
