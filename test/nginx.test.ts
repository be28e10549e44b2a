/**
 * nginx (Debian's nginx-light) as a workload with its own namespaces (`ferry run --user root`):
 * the master runs as root of its user namespace and its workers as www-data, which the host's
 * root could not dump without that namespace (docs/architecture.md, "Workloads run as another
 * user"). A keep-alive HTTP client asks it every 20 ms while it moves h1 -> h2 -> h1, then both
 * ways by post-copy (vm.unprivileged_userfaultfd=1 for this file's cluster): every
 * request is answered, and by the moved server. A --user workload's open connections cannot move:
 * without `--close-tcp` the move is refused before freezing; with it they are closed at the move, so
 * the client's keep-alive connection ends there and a request caught in it is asked again (GET,
 * idempotent); the listening socket and the service address move.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { allowUnprivilegedUserfaultfd, startTestCluster, type TestCluster } from './helpers/cluster';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const ADDRESS = '198.18.252.101';
const PORT = 8080;
let cluster: TestCluster;
let dir: string;

let restoreSysctl: (() => Promise<void>) | undefined;

beforeAll(async () => {
  // Lazy and post-copy restores in its user namespace need it (test/user-workloads.test.ts checks the refusal without).
  restoreSysctl = await allowUnprivilegedUserfaultfd();
  cluster = await startTestCluster('tngx', 252);
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
  if (dir) await rm(dir, { recursive: true, force: true });
});

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function get(n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ADDRESS, port: PORT, path: `/?n=${n}`, agent, timeout: 5_000 }, (res) => {
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

async function where(): Promise<{ host: string; pid: number; state: string }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string }>).find((w) => w.name === 'ngx')!;
}

test('nginx, master and www-data workers, moves h1 -> h2 -> h1, then both ways by post-copy, under a keep-alive client: every request answered', async () => {
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'ngx', '--user', 'root', '--address', `${ADDRESS}/24`, '--cwd', dir, '--json', '--', '/usr/sbin/nginx', '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;']);
  expect(run.code).toBe(0);
  await waitFor('nginx answers', async () => (await get(0).catch(() => '')) === 'hello 0\n', 30_000);
  const wwwData = Number((await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith('www-data:'))!.split(':')[2]);
  const expectTree = async (pid: number) => {
    const procs = await tree(pid);
    expect(procs[0]!.uid).toBe(0);
    expect(procs.slice(1).map((p) => p.uid)).toEqual([wwwData, wwwData]);
    expect(await readFile(`/proc/${pid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
  };
  await expectTree(run.json.pid);

  const N = 800;
  let answered = 0;
  let retries = 0;
  // Set when the test ends early (a failed expectation): the client must not outlive it.
  let stopped = false;
  const client = (async () => {
    for (let n = 1; n <= N; n++) {
      for (;;) {
        if (stopped) return;
        try {
          expect(await get(n)).toBe(`hello ${n}\n`);
          answered++;
          break;
        } catch (err) {
          // Only the move's closed connection or the moment the address is between hosts.
          expect((err as Error).message).toMatch(/ECONNRESET|socket hang up|ECONNREFUSED|timeout|EHOSTUNREACH/);
          retries++;
          await sleep(50);
        }
      }
      await sleep(20);
    }
  })();
  try {
    const legs = [['h2', []], ['h1', ['--transport', 'nats']], ['h2', ['--restore', 'post-copy']], ['h1', ['--restore', 'post-copy', '--transport', 'nats']]] as const;
    for (const [to, extra] of legs) {
      const before = answered;
      await waitFor('requests flow', async () => answered > before + 20, 30_000);
      // Its keep-alive connection cannot move: without --close-tcp the move is refused before
      // anything is frozen, naming it, and the client never notices.
      const refused = await cluster.ferry(['migrate', 'ngx', '--to', to, ...extra, '--json']);
      expect(refused.json?.error).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(new RegExp(`TCP connection.*${ADDRESS}:${PORT} <-> .*--close-tcp`)) });
      expect(await where()).toMatchObject({ host: to === 'h2' ? 'h1' : 'h2', state: 'running' });
      const during = answered;
      await waitFor('requests flow on', async () => answered > during + 5, 30_000);
      const res = await cluster.ferry(['migrate', 'ngx', '--to', to, ...extra, '--close-tcp', '--json']);
      expect({ to, state: res.json?.state, error: res.json?.error }).toEqual({ to, state: 'succeeded', error: undefined });
      const now = await where();
      expect(now).toMatchObject({ host: to, state: 'running' });
      await expectTree(now.pid);
    }
    await client;
  } finally {
    stopped = true;
    await client.catch(() => undefined);
  }
  expect(answered).toBe(N);
  expect(retries).toBeLessThan(50);
  agent.destroy();
  expect((await cluster.ferry(['stop', 'ngx'])).code).toBe(0);
});
