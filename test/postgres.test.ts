/**
 * PostgreSQL 15 from Debian, run as its own user `postgres` (`ferry run --user postgres`): a
 * postmaster with its background processes, SysV and POSIX shared memory, a unix socket in its
 * data dir (a local dir, so the database moves with it) and a TCP listener on its service address.
 * A client inserts rows over TCP while the database moves h1 -> h2 -> h1, then both ways by
 * post-copy (vm.unprivileged_userfaultfd=1 for this file's cluster); each insert is retried
 * until it is answered and is idempotent (primary key, ON CONFLICT DO NOTHING), so the table must
 * end with every row exactly once. Established client connections are closed at the move (a --user
 * workload's cannot be repaired in its user namespace, docs/architecture.md; the moves say
 * `--close-tcp`, without which one is refused while a client is connected) and the client
 * reconnects; the database itself, its rows and its processes move intact.
 */
import { execFile } from 'node:child_process';
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

test('PostgreSQL as user postgres moves h1 -> h2 -> h1, then both ways by post-copy, under a client inserting over TCP: every row once, the server intact', async () => {
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

  // The client: rows 1..N in order, each retried until answered (idempotent), never skipped.
  const N = 300;
  let next = 1;
  let retries = 0;
  const errors: string[] = [];
  // Set when the test ends early (a failed expectation): the client must not outlive it.
  let stopped = false;
  const client = (async () => {
    while (next <= N && !stopped) {
      const r = await sql(`INSERT INTO t VALUES (${next}) ON CONFLICT DO NOTHING`);
      if (r.ok) next++;
      else {
        retries++;
        errors.push(r.error.split('\n')[0]!);
        await sleep(100);
      }
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
      // Its clients' connections cannot move (a --user workload): the operator agrees to close them.
      const res = await cluster.ferry(['migrate', 'pg', '--to', to, ...extra, '--close-tcp', '--json']);
      expect({ to, extra, state: res.json?.state, error: res.json?.error }).toEqual({ to, extra, state: 'succeeded', error: undefined });
      expect(res.json.restore).toBe(restore);
      const now = await where();
      expect(now).toMatchObject({ host: to, state: 'running' });
      await expectPostgresTree(now.pid);
      // It answers from its new host, and the rows it had are all there.
      const before = next;
      await waitFor('inserts go on after the move', async () => next > before + 5, 60_000);
    }
    await client;
  } finally {
    // A failed expectation must not leave the client inserting into a cluster being torn down.
    stopped = true;
    await client;
  }
  expect(await sql('SELECT count(*), min(v), max(v), sum(v) FROM t')).toEqual({ ok: true, out: `${N}|1|${N}|${(N * (N + 1)) / 2}` });
  // The client only ever saw refused or closed connections during the moves, never a wrong answer;
  // or, for a query in flight at the freeze, no answer until its own timeout: its connection is
  // restored closed on the target, which says nothing to a client that only waits (docs/compatibility.md).
  for (const e of errors) expect(e).toMatch(/could not connect|Connection refused|server closed the connection|connection to server|timeout expired|terminating connection|client timeout/i);
  expect(errors.filter((e) => e === 'client timeout').length).toBeLessThanOrEqual(2);
  expect(retries).toBeLessThan(200);
  expect(await where()).toMatchObject({ host: 'h1', state: 'running' });
  expect(await sql('SELECT count(*) FROM t')).toEqual({ ok: true, out: String(N) });
  expect((await cluster.ferry(['stop', 'pg'])).code).toBe(0);
});
