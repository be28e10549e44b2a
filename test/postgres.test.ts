/**
 * PostgreSQL 15 from Debian, run as its own user `postgres` (`ferry run --user postgres`): a
 * postmaster with its background processes, SysV and POSIX shared memory, a unix socket in its
 * data dir (a local dir, so the database moves with it) and a TCP listener on its service address.
 * One psql session inserts rows over TCP, one every 20 ms, while the database moves h1 -> h2 -> h1,
 * then both ways by post-copy (vm.unprivileged_userfaultfd=1 for this file's cluster). With its
 * service address the workload has a network namespace of its own (agent host/workload-network.ts),
 * where CRIU repairs its connections on the target: the session goes on through every move, served
 * by the same backend process, no insert fails or is retried (a duplicate would fail: no ON
 * CONFLICT), and the table ends with every row exactly once. The database itself, its rows and its
 * processes move intact.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { allowUnprivilegedUserfaultfd, startTestCluster, type TestCluster } from './helpers/cluster';
import { sleep, waitFor } from './helpers/workload';

jest.setTimeout(300_000);
const execFileP = promisify(execFile);
const SUBNET = 251;
/** The database's service address: on the cluster's bridge subnet (198.18.0.0/15, subnet index 251 -> 198.18.251.x). */
const ADDRESS = '198.18.251.100';
const PG_BIN = '/usr/lib/postgresql/15/bin';
/** The user's uid on this machine (the package makes it). */
let postgresUid = Number.NaN;
let cluster: TestCluster;
let restoreSysctl: (() => Promise<void>) | undefined;

beforeAll(async () => {
  // Lazy and post-copy restores in its user namespace need it (test/user-workloads.test.ts checks the refusal without).
  restoreSysctl = await allowUnprivilegedUserfaultfd();
  cluster = await startTestCluster('tpg', SUBNET);
  postgresUid = Number((await execFileP('id', ['-u', 'postgres'])).stdout.trim());
});

afterAll(async () => {
  await cluster?.stop();
  await restoreSysctl?.();
});

/** One statement through psql over TCP; the error text when it was not answered. */
async function sql(statement: string): Promise<{ ok: true; out: string } | { ok: false; error: string }> {
  try {
    const { stdout } = await execFileP('psql', ['-h', ADDRESS, '-U', 'postgres', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', statement], {
      timeout: 20_000,
      env: { ...process.env, PGCONNECT_TIMEOUT: '5' },
    });
    return { ok: true, out: stdout.trim() };
  } catch (err) {
    // Killed by the timeout above: a query in flight when the server froze hears no reset (below).
    if ((err as { killed?: boolean }).killed) return { ok: false, error: 'client timeout' };
    return { ok: false, error: String((err as { stderr?: string }).stderr ?? (err as Error).message) };
  }
}

/**
 * One psql session over TCP, kept open through every move: a statement in, its output back (each
 * followed by an \\echo of a token, so the answer's end is known). psql's stdout is line-buffered
 * (stdbuf) so each answer arrives as it is printed. Fails a query when psql exits (its connection
 * lost: ON_ERROR_STOP) or gives no answer within `timeoutMs`.
 */
class PsqlSession {
  private buffer = '';
  private stderr = '';
  private pending: { token: string; resolve: (out: string) => void; reject: (err: Error) => void } | null = null;
  private exited: Error | null = null;
  private count = 0;

  constructor(private readonly proc: ChildProcessWithoutNullStreams) {
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.settle();
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk: string) => (this.stderr += chunk));
    proc.on('exit', (code) => {
      this.exited = new Error(`psql exited (${code}): ${this.stderr.trim()}`);
      this.pending?.reject(this.exited);
      this.pending = null;
    });
  }

  static open(): PsqlSession {
    const args = ['-oL', 'psql', '-h', ADDRESS, '-U', 'postgres', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1'];
    return new PsqlSession(spawn('stdbuf', args, { env: { ...process.env, PGCONNECT_TIMEOUT: '5' } }));
  }

  query(statement: string, timeoutMs = 60_000): Promise<string> {
    if (this.exited) return Promise.reject(this.exited);
    const token = `ferry-answer-${++this.count}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        reject(new Error(`no answer to "${statement}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (fn: () => void) => {
        clearTimeout(timer);
        fn();
      };
      this.pending = { token, resolve: (out) => done(() => resolve(out)), reject: (err) => done(() => reject(err)) };
      this.proc.stdin.write(`${statement};\n\\echo ${token}\n`);
    });
  }

  close(): void {
    this.proc.stdin.end();
    if (this.proc.exitCode === null && this.proc.pid !== undefined) process.kill(this.proc.pid, 'SIGTERM');
  }

  private settle(): void {
    if (!this.pending) return;
    const at = this.buffer.indexOf(`${this.pending.token}\n`);
    if (at < 0) return;
    const out = this.buffer.slice(0, at).trim();
    this.buffer = this.buffer.slice(at + this.pending.token.length + 1);
    const { resolve } = this.pending;
    this.pending = null;
    resolve(out);
  }
}

async function where(): Promise<{ host: string; pid: number; state: string }> {
  const ps = await cluster.ferry(['ps', '--json']);
  return (ps.json as Array<{ name: string; host: string; pid: number; state: string }>).find((w) => w.name === 'pg')!;
}

/** The workload's processes as the host sees them: every one `postgres`, and the postmaster pid 1 of its own namespace. */
async function expectPostgresTree(rootPid: number): Promise<void> {
  const status = await readFile(`/proc/${rootPid}/status`, 'utf8');
  expect(status).toMatch(new RegExp(`^Uid:\\s+${postgresUid}\\s`, 'm'));
  // NSpid: the host's pid, then its own PID namespace's: 1, the postmaster is that namespace's init.
  expect(status).toMatch(/^NSpid:\s+\d+\s+1$/m);
  const children = (await readFile(`/proc/${rootPid}/task/${rootPid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean);
  // checkpointer, background writer, walwriter, autovacuum launcher, logical replication launcher.
  expect(children.length).toBeGreaterThanOrEqual(4);
  for (const pid of children) {
    // A backend of a client that just disconnected may be gone by now: only the living are checked.
    const st = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
    if (st !== null) expect(st).toMatch(new RegExp(`^Uid:\\s+${postgresUid}\\s`, 'm'));
  }
}

test('PostgreSQL as user postgres moves h1 -> h2 -> h1, then both ways by post-copy, under one psql session inserting over TCP: every row once, the session and the server intact', async () => {
  const script = [
    'set -e',
    `${PG_BIN}/initdb -D /srv/pg/data -A trust -U postgres >/dev/null`,
    'echo "host all all 198.18.0.0/15 trust" >> /srv/pg/data/pg_hba.conf',
    `exec ${PG_BIN}/postgres -D /srv/pg/data -k /srv/pg -c listen_addresses=${ADDRESS} -p 5432`,
  ].join('; ');
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'pg', '--user', 'postgres', '--local-dir', '/srv/pg', '--address', `${ADDRESS}/24`, '--cwd', '/srv/pg', '--env', 'LANG=C', '--json', '--', '/bin/sh', '-c', script]);
  expect(run.code).toBe(0);
  expect(run.json).toMatchObject({ user: { name: 'postgres' }, address: `${ADDRESS}/24` });
  await waitFor('postgres accepts connections', async () => (await sql('SELECT 1')).ok, 60_000);
  expect(await sql('CREATE TABLE t (v int PRIMARY KEY)')).toMatchObject({ ok: true });
  await expectPostgresTree(run.json.pid);

  // The client: one session, rows 1, 2, 3... one every 20 ms until told to stop; an insert that fails ends it.
  const session = PsqlSession.open();
  const backend = await session.query('SELECT pg_backend_pid()');
  expect(backend).toMatch(/^\d+$/);
  let next = 1;
  const errors: string[] = [];
  // Set once the moves are done (or the test ends early: the client must not outlive it).
  let stopped = false;
  const client = (async () => {
    while (!stopped) {
      try {
        await session.query(`INSERT INTO t VALUES (${next})`);
        next++;
      } catch (err) {
        errors.push((err as Error).message);
        return;
      }
      await sleep(20);
    }
  })();

  try {
    const legs = [
      ['h2', [], 'lazy'],
      ['h1', ['--transport', 'nats'], 'lazy'],
      ['h2', ['--restore', 'post-copy'], 'post-copy'],
      ['h1', ['--restore', 'post-copy', '--transport', 'nats'], 'post-copy'],
    ] as const;
    for (const [to, extra, restore] of legs) {
      await waitFor('the client is inserting', async () => next > 10, 60_000);
      const res = await cluster.ferry(['migrate', 'pg', '--to', to, ...extra, '--json']);
      expect({ to, extra, state: res.json?.state, error: res.json?.error }).toEqual({ to, extra, state: 'succeeded', error: undefined });
      expect(res.json.restore).toBe(restore);
      const now = await where();
      expect(now).toMatchObject({ host: to, state: 'running' });
      await expectPostgresTree(now.pid);
      // It answers from its new host, and the rows it had are all there.
      const before = next;
      await waitFor('inserts go on after the move', async () => next > before + 5 || errors.length > 0, 60_000);
      expect(errors).toEqual([]);
    }
  } finally {
    // Done, or a failed expectation: the client must not go on inserting into a cluster being torn down.
    stopped = true;
    await client;
  }
  // Not one insert failed, in the one session: every row once, and the same backend process served it all along.
  expect(errors).toEqual([]);
  const rows = next - 1;
  expect(rows).toBeGreaterThan(50);
  expect(await session.query('SELECT count(*), min(v), max(v), sum(v) FROM t')).toBe(`${rows}|1|${rows}|${(rows * (rows + 1)) / 2}`);
  expect(await session.query('SELECT pg_backend_pid()')).toBe(backend);
  session.close();
  expect(await where()).toMatchObject({ host: 'h1', state: 'running' });
  expect((await cluster.ferry(['stop', 'pg'])).code).toBe(0);
});
