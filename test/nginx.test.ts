/**
 * nginx (Debian's nginx-light) as a workload with its own namespaces (`ferry run --user root`):
 * the master runs as root of its user namespace and its workers as www-data, which the host's
 * root could not dump without that namespace (docs/architecture.md, "Workloads run as another
 * user"). A keep-alive HTTP client asks it every 20 ms while it moves h1 -> h2 -> h1, then both
 * ways by post-copy (vm.unprivileged_userfaultfd=1 for this file's cluster): every request is
 * answered, by the moved server, on the client's one connection. With its service address the
 * workload has a network namespace of its own (agent host/workload-network.ts), where CRIU can
 * repair its connections on the target: the listening socket, the address and the client's
 * connection all move. A fifth move, whose restore fails on h3, rolls back under the same client.
 */
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { allowUnprivilegedUserfaultfd, REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const ADDRESS = '198.18.252.101';
const PORT = 8080;
let cluster: TestCluster;
let dir: string;

let restoreSysctl: (() => Promise<void>) | undefined;
// CRIU runs with a clean environment, so the wrapper finds its trigger next to itself.
const WRAPPER_DIR = mkdtempSync(join(tmpdir(), 'ferry-criu-wrapper-'));
const CRIU_WRAPPER = join(WRAPPER_DIR, 'criu');
copyFileSync(join(REPO, 'test/fixtures/criu-failing-restore.sh'), CRIU_WRAPPER);

beforeAll(async () => {
  // Lazy and post-copy restores in its user namespace need it (test/user-workloads.test.ts checks the refusal without).
  restoreSysctl = await allowUnprivilegedUserfaultfd();
  // h3 restores through a CRIU wrapper that damages the image while its trigger exists (test/fixtures/criu-failing-restore.sh).
  cluster = await startTestCluster('tngx', 252, { hosts: 3, agentEnvFor: (host): Record<string, string> => (host === 'h3' ? { FERRY_CRIU_PATH: CRIU_WRAPPER } : {}) });
  // Under /tmp: inside the root an isolated workload gets.
  dir = await mkdtemp('/tmp/ferry-nginx-test-');
  await writeFile(
    join(dir, 'nginx.conf'),
    [
      'user www-data;',
      'worker_processes 2;',
      `pid ${dir}/nginx.pid;`,
      'error_log stderr;',
      'events { worker_connections 64; }',
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
      '  keepalive_timeout 120;',
      '  keepalive_requests 100000;',
      `  server { listen ${ADDRESS}:${PORT}; location / { return 200 "hello $arg_n\\n"; } }`,
      '}',
    ].join('\n'),
  );
});

afterAll(async () => {
  await cluster?.stop();
  await restoreSysctl?.();
  await rm(WRAPPER_DIR, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

/** Connections the client opened (a request that did not reuse the keep-alive one). */
let connectionsOpened = 0;

function get(n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // Long enough for a request caught by a freeze: TCP retransmits it, backing off, until the move ends.
    const req = request({ host: ADDRESS, port: PORT, path: `/?n=${n}`, agent, timeout: 20_000 }, (res) => {
      if (!req.reusedSocket) connectionsOpened++;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function tree(rootPid: number): Promise<Array<{ pid: number; uid: number }>> {
  const uidOf = async (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]);
  const children = (await readFile(`/proc/${rootPid}/task/${rootPid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
  return Promise.all([rootPid, ...children].map(async (pid) => ({ pid, uid: await uidOf(pid) })));
}

async function where(): Promise<{ host: string; pid: number; state: string; ownNetwork: boolean }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string; ownNetwork: boolean }>).find((w) => w.name === 'ngx')!;
}

test('nginx, master and www-data workers, moves h1 -> h2 -> h1, then both ways by post-copy, under a keep-alive client: every request answered on its one connection', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'ngx', '--user', 'root', '--address', `${ADDRESS}/24`, '--cwd', dir, '--json', '--', '/usr/sbin/nginx', '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;']);
  expect(run.code).toBe(0);
  await waitFor('nginx answers', async () => (await get(0).catch(() => '')) === 'hello 0\n', 30_000);
  const wwwData = Number((await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith('www-data:'))!.split(':')[2]);
  const expectTree = async (pid: number, host = 'h1') => {
    // Its own network namespace (an --user workload with an address), not its host's.
    const hostNs = `net:[${(await stat(`/run/netns/tngx-${host}`)).ino}]`;
    expect(await readlink(`/proc/${pid}/ns/net`)).not.toBe(hostNs);
    expect(await where()).toMatchObject({ ownNetwork: true });
    const procs = await tree(pid);
    expect(procs[0]!.uid).toBe(0);
    expect(procs.slice(1).map((p) => p.uid)).toEqual([wwwData, wwwData]);
    expect(await readFile(`/proc/${pid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
  };
  await expectTree(run.json.pid);
  const opened = connectionsOpened;

  let answered = 0;
  const errors: string[] = [];
  // Set once the moves are done (or the test ends early: the client must not outlive it).
  let stopped = false;
  const client = (async () => {
    for (let n = 1; !stopped; n++) {
      try {
        expect(await get(n)).toBe(`hello ${n}\n`);
        answered++;
      } catch (err) {
        // Expected never to happen (below): the connection moves with the server; the first failure ends the client.
        errors.push((err as Error).message);
        return;
      }
      await sleep(20);
    }
  })();
  const flowing = async () => {
    const before = answered;
    await waitFor('requests flow', async () => answered > before + 20 || errors.length > 0, 30_000);
    expect(errors).toEqual([]);
  };
  try {
    const legs = [['h2', []], ['h1', ['--transport', 'nats']], ['h2', ['--restore', 'post-copy']], ['h1', ['--restore', 'post-copy', '--transport', 'nats']]] as const;
    for (const [to, extra] of legs) {
      await flowing();
      const res = await cluster.ferry(['migrate', 'ngx', '--to', to, ...extra, '--json']);
      expect({ to, state: res.json?.state, error: res.json?.error }).toEqual({ to, state: 'succeeded', error: undefined });
      const now = await where();
      expect(now).toMatchObject({ host: to, state: 'running' });
      await expectTree(now.pid, to);
    }
    // A move whose restore fails on the target (h3's CRIU gets a damaged image) rolls back after
    // the dump: the address is routed to its namespace here again, CRIU's lock inside it dropped,
    // its connections out of repair mode, and the client goes on on the same connection.
    await flowing();
    // Only now: h3's agent probed its CRIU at start, which must have worked.
    writeFileSync(join(WRAPPER_DIR, 'fail-restore'), '');
    const failed = await cluster.ferry(['migrate', 'ngx', '--to', 'h3', '--json']);
    expect(failed.json).toMatchObject({ state: 'rolled-back', error: { code: 'RESTORE_FAILED' } });
    expect(await where()).toMatchObject({ host: 'h1', state: 'running' });
    await flowing();
  } finally {
    stopped = true;
    await client.catch(() => undefined);
  }
  // Not one request failed, and all went over the connection it had before the first move.
  expect(errors).toEqual([]);
  expect(answered).toBeGreaterThan(100);
  expect(connectionsOpened).toBe(opened);
  agent.destroy();
  expect((await cluster.ferry(['stop', 'ngx'])).code).toBe(0);
});
