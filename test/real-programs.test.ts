/**
 * Real programs under live clients (issue #17): redis-server, a JVM (a small Java program compiled
 * here with javac: worker threads keeping a heap that must check out, and a server answering INCR)
 * and nats-server (a Go program), each with its own service address and a client on a third host
 * sending a request every 5 ms on one connection (INCR; for nats-server a message to a subject it
 * subscribes to). Each moves h1 -> h2 -> h1 by the default path, h1 -> h2 direct, h2 -> h1 over NATS and
 * then both ways by post-copy; the client checks every answer is one more than the last (nothing
 * lost, nothing served twice) and never reconnects, and at the end the program's own count equals
 * the client's answers. nginx and PostgreSQL, whose processes run as another user, are left to the
 * `ferry run --user` work (test/user-workloads.test.ts).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { chmod, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dev } from '@ferry/dev-cluster';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { waitFor } from './helpers/workload';

const exec = promisify(execFile);
jest.setTimeout(300_000);

const CLUSTER = 'tprog';
const CLIENT = join(REPO, 'test/fixtures/resp-incr-client.py');
let cluster: TestCluster;
let scratch: string;
let subnet: string;

beforeAll(async () => {
  cluster = await startTestCluster(CLUSTER, 244, { hosts: 3 });
  scratch = mkdtempSync(join(tmpdir(), 'ferry-programs-'));
  await chmod(scratch, 0o755);
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; address: string }>;
  subnet = hosts[0].address.replace(/\.\d+$/, '');
});

afterAll(async () => {
  await cluster?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Both ways by the default path, out by direct and back over NATS, then both ways by post-copy. */
const MOVES = [
  { to: 'h2', args: [] as string[] },
  { to: 'h1', args: [] as string[] },
  { to: 'h2', args: ['--transport', 'direct'] },
  { to: 'h1', args: ['--transport', 'nats'] },
  { to: 'h2', args: ['--restore', 'post-copy'] },
  { to: 'h1', args: ['--restore', 'post-copy'] },
];

type PsEntry = { name: string; host: string; state: string; pid: number };

async function runningOn(name: string, host: string): Promise<PsEntry> {
  return waitFor(`${name} running on ${host}`, async () => {
    const e = ((await cluster.ferry(['ps', '--json'])).json as PsEntry[]).filter((x) => x.name === name);
    return e.length === 1 && e[0].host === host && e[0].state === 'running' ? e[0] : undefined;
  }, 30_000);
}

/** Live processes on the machine (every host's) whose command line `matches`, none of them a child of another. */
async function copies(matches: (cmdline: string) => boolean): Promise<number[]> {
  const found = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (!stat || rest[0] === 'Z') continue;
    if (matches((await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' '))) found.set(Number(entry), Number(rest[1]));
  }
  return [...found.keys()].filter((pid) => !found.has(found.get(pid)!));
}

async function addressesOf(host: string): Promise<string[]> {
  const { stdout } = await dev.hostExec(CLUSTER, host, ['ip', '-4', '-o', 'addr', 'show']);
  return stdout.split('\n').map((l) => l.split(/\s+/)[3]).filter(Boolean).map((a) => a.split('/')[0]!);
}

interface ClientStatus {
  word: string;
  sent: number;
  answered: number;
  last: number;
  text: string;
}

async function clientStatus(file: string): Promise<ClientStatus> {
  const text = (await readFile(file, 'utf8').catch(() => '')).trim();
  const [word, sent, answered, last] = text.split(' ');
  return { word: word ?? '', sent: Number(sent), answered: Number(answered), last: Number(last), text };
}

/** Waits until the client has had `more` answers more than now; fails at once on its first error. */
async function clientAdvances(file: string, more = 100): Promise<ClientStatus> {
  const start = await clientStatus(file);
  expect(start.text).toMatch(/^ok /);
  return waitFor(`client past ${start.answered + more} answers`, async () => {
    const s = await clientStatus(file);
    if (s.word !== 'ok') throw new Error(`client failed: ${s.text}`);
    return s.answered >= start.answered + more ? s : undefined;
  }, 60_000);
}

/** One inline command to ADDRESS:PORT from h3 (the client's host), its answer's first line. */
async function ask(ip: string, port: number, command: string): Promise<string> {
  const script = `import socket, sys
s = socket.create_connection(("${ip}", ${port}), timeout=10)
s.sendall(b"${command}\\r\\n")
f = s.makefile("rb")
line = f.readline()
if line.startswith(b"$"):
    line = f.readline()
sys.stdout.write(line.decode().strip())`;
  return (await dev.hostExec(CLUSTER, 'h3', ['/usr/bin/python3', '-c', script], { timeoutMs: 15_000 })).stdout;
}

/**
 * Runs the client against ip:port on h3, moves `name` through MOVES under it, checking after each move
 * that it runs once on the target, its address moved, and the client carries on; `after(host)` checks
 * the program's own view. Then stops the client and returns its final status.
 */
async function underLiveClient(
  name: string,
  ip: string,
  port: number,
  count: (cmd: string) => boolean,
  after: (host: string) => Promise<void>,
  clientProgram = CLIENT,
): Promise<ClientStatus> {
  const status = join(scratch, `${name}.client`);
  const client = await cluster.ferry(['run', '--host', 'h3', '--name', `${name}-client`, '--', '/usr/bin/python3', clientProgram, ip, String(port), status]);
  expect(client.code).toBe(0);
  await waitFor('client answered', async () => (await clientStatus(status)).answered > 50, 30_000);
  for (const { to, args } of MOVES) {
    const moved = await cluster.ferry(['migrate', name, '--to', to, ...args, '--json']);
    // Over the transport asked for, restored by post-copy when asked.
    const asked = args[0] === '--transport' ? args[1] : undefined;
    expect({ to, args, state: moved.json?.state, error: moved.json?.error, transport: asked && moved.json?.transport, postCopy: moved.json?.restore === 'post-copy' }).toEqual({
      to,
      args,
      state: 'succeeded',
      error: undefined,
      transport: asked,
      postCopy: args.includes('post-copy'),
    });
    const entry = await runningOn(name, to);
    expect((await clientAdvances(status)).word).toBe('ok');
    await waitFor(`one copy of ${name}`, async () => {
      const c = await copies(count);
      return c.length === 1 && c[0] === entry.pid;
    }, 20_000);
    expect(await addressesOf(to)).toContain(ip);
    expect(await addressesOf(to === 'h1' ? 'h2' : 'h1')).not.toContain(ip);
    await after(to);
  }
  await writeFile(`${status}.stop`, '');
  const done = await waitFor('client done', async () => {
    const s = await clientStatus(status);
    if (s.word === 'error') throw new Error(`client failed: ${s.text}`);
    return s.word === 'done' ? s : undefined;
  }, 30_000);
  await cluster.ferry(['stop', `${name}-client`]);
  return done;
}

test('redis-server with its append-only file in a local dir moves both ways in every mode (default, direct, NATS, post-copy) under a client doing INCR every 5 ms on one connection: every request answered once, the same server process throughout, its file complete', async () => {
  const ip = `${subnet}.100`;
  const port = 7379;
  // Its data: an append-only file written (and fsynced) on every INCR, in a local dir that moves with it.
  const dir = '/srv/redis';
  const redisArgs = (bind: string) => ['/usr/bin/redis-server', '--bind', bind, '--port', String(port), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--protected-mode', 'no', '--dir', dir];
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'redis', '--address', `${ip}/24`, '--local-dir', dir, '--json', '--', ...redisArgs(ip)]);
  expect(run.code).toBe(0);
  await waitFor('redis answers', async () => (await ask(ip, port, 'PING')) === '+PONG', 30_000);
  // The server's own identity: a restarted redis would have another run_id and its uptime from 0.
  const info = async () => {
    // A bulk string: "$LENGTH", then LENGTH bytes.
    const script = `import socket
s = socket.create_connection(("${ip}", ${port}), timeout=10)
s.sendall(b"INFO server\\r\\n")
f = s.makefile("rb")
length = int(f.readline()[1:])
print(f.read(length).decode())`;
    const text = (await dev.hostExec(CLUSTER, 'h3', ['/usr/bin/python3', '-c', script], { timeoutMs: 15_000 })).stdout;
    return { runId: /run_id:(\w+)/.exec(text)?.[1], uptime: Number(/uptime_in_seconds:(\d+)/.exec(text)?.[1]) };
  };
  const first = await info();
  expect(first.runId).toMatch(/^[0-9a-f]{40}$/);
  const isRedis = (cmd: string) => cmd.includes('redis-server') && cmd.includes(`${ip}:${port}`);
  const done = await underLiveClient('redis', ip, port, isRedis, async () => {
    const now = await info();
    expect(now.runId).toBe(first.runId);
    expect(now.uptime).toBeGreaterThanOrEqual(first.uptime);
  });
  // Every request answered exactly once: the client's answers, its requests and redis's own count agree.
  expect(done.sent).toBe(done.answered);
  expect(done.last).toBe(done.answered);
  expect(Number(await ask(ip, port, 'GET ferry:counter'))).toBe(done.last);
  expect((await cluster.ferry(['stop', 'redis'])).code).toBe(0);
  await waitFor('redis gone', async () => (await copies(isRedis)).length === 0);
  // A new redis-server on the last host, from the append-only file that moved: every INCR is in it.
  const again = `${subnet}.102`;
  const reread = await cluster.ferry(['run', '--host', 'h1', '--name', 'redis-again', '--address', `${again}/24`, '--local-dir', dir, '--json', '--', ...redisArgs(again)]);
  expect(reread.code).toBe(0);
  const replayed = await waitFor('the new redis loaded its file', async () => {
    const answer = await ask(again, port, 'GET ferry:counter').catch(() => '');
    return /^\d+$/.test(answer) ? answer : undefined; // not "-LOADING ..." nor nothing yet
  }, 30_000);
  expect(Number(replayed)).toBe(done.last);
  expect((await cluster.ferry(['stop', 'redis-again'])).code).toBe(0);
  for (const host of ['h1', 'h2']) await dev.hostExec(CLUSTER, host, ['rm', '-rf', dir]);
});

test('a JVM (threads, a heap it checks, a server) moves both ways in every mode (default, direct, NATS, post-copy) under a client doing INCR every 5 ms: every request answered once, every thread and its heap intact', async () => {
  const ip = `${subnet}.101`;
  const port = 7380;
  const classes = join(scratch, 'jvm-classes');
  const state = join(scratch, 'jvm-state');
  await exec('mkdir', ['-p', classes, state]);
  await exec('/usr/bin/javac', ['-d', classes, join(REPO, 'test/fixtures/JvmWorkload.java')], { timeout: 120_000 });
  // No hsperfdata file in /tmp (a shared mapping of a local file named after its pid, 1 in its namespace).
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'jvm', '--address', `${ip}/24`, '--json', '--',
    '/usr/bin/java', '-XX:-UsePerfData', '-XX:+UseSerialGC', '-Xmx256m', '-cp', classes, 'JvmWorkload', state, ip, String(port), '4']);
  expect(run.code).toBe(0);
  await waitFor('the JVM answers', async () => (await ask(ip, port, 'GET ferry:counter')) === '0', 60_000);
  const view = async () => {
    await rm(join(state, 'report'), { force: true });
    await writeFile(join(state, 'ask'), '');
    return waitFor('the JVM reported its view', async () => JSON.parse(await readFile(join(state, 'report'), 'utf8')), 30_000);
  };
  type Worker = { name: string; alive: boolean; rounds: number; heapOk: boolean };
  let last: Worker[] = (await view()).workers;
  const isJvm = (cmd: string) => cmd.includes('JvmWorkload') && cmd.includes(state);
  const done = await underLiveClient('jvm', ip, port, isJvm, async (host) => {
    const v = await view();
    expect({ host, workers: v.workers.map((w: Worker) => [w.name, w.alive, w.heapOk]) }).toEqual({
      host,
      workers: [1, 2, 3, 4].map((i) => [`worker-${i}`, true, true]),
    });
    // Every worker thread carries on from where it was.
    v.workers.forEach((w: Worker, i: number) => expect(w.rounds).toBeGreaterThan(last[i]!.rounds));
    last = v.workers;
    expect((await readFile(join(state, 'starts'), 'utf8')).trim()).toBe('start');
  });
  expect(done.sent).toBe(done.answered);
  expect(done.last).toBe(done.answered);
  expect(Number(await ask(ip, port, 'GET ferry:counter'))).toBe(done.last);
  expect((await view()).served).toBe(done.answered);
  expect((await cluster.ferry(['stop', 'jvm'])).code).toBe(0);
  await waitFor('the JVM gone', async () => (await copies(isJvm)).length === 0);
});

test('nats-server (a Go program) moves both ways in every mode (default, direct, NATS, post-copy) under a client publishing every 5 ms to a subject it subscribes to: every message delivered once, in order, the same server throughout', async () => {
  const ip = `${subnet}.103`;
  const port = 4333;
  const monitor = 8333;
  const conf = join(scratch, 'nats-server.conf');
  // Clients and monitoring on the service address only.
  await writeFile(conf, `listen: "${ip}:${port}"\nhttp: "${ip}:${monitor}"\n`);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'gnatsd', '--address', `${ip}/24`, '--json', '--', '/usr/sbin/nats-server', '-c', conf]);
  expect({ code: run.code, error: run.json?.error }).toEqual({ code: 0, error: undefined });
  // The server's own view, from its monitoring endpoint: who it is and what it counted.
  const varz = async (): Promise<{ server_id: string; start: string; in_msgs: number; out_msgs: number }> => {
    const script = `import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("http://${ip}:${monitor}/varz", timeout=10).read().decode())`;
    return JSON.parse((await dev.hostExec(CLUSTER, 'h3', ['/usr/bin/python3', '-c', script], { timeoutMs: 15_000 })).stdout);
  };
  const first = await waitFor('nats-server answers', async () => varz().catch(() => undefined), 30_000);
  const isNats = (cmd: string) => cmd.includes('nats-server') && cmd.includes(conf);
  const done = await underLiveClient('gnatsd', ip, port, isNats, async () => {
    const now = await varz();
    expect({ id: now.server_id, start: now.start }).toEqual({ id: first.server_id, start: first.start });
  }, join(REPO, 'test/fixtures/nats-pubsub-client.py'));
  expect(done.sent).toBe(done.answered);
  expect(done.last).toBe(done.answered);
  // Its own count: every message in once and out once (echoed to the one subscriber).
  const end = await varz();
  expect([end.in_msgs, end.out_msgs]).toEqual([done.sent, done.answered]);
  expect((await cluster.ferry(['stop', 'gnatsd'])).code).toBe(0);
  await waitFor('nats-server gone', async () => (await copies(isNats)).length === 0);
});
