'use strict';
/**
 * `npm run bench`: ferry's live migration against CRIU's own page-server migration of the same
 * workloads, and against the ceilings of the path the bytes travel (one raw TCP stream between two
 * hosts, a bare NATS pub/sub stream through the cluster's nats-server). Prints a table and writes
 * it to bench/results.md. A benchmark, not a test: it asserts nothing.
 *
 * Downtime is measured the same way for both methods: the workload appends time.time() to a file
 * every 10 ms; the longest gap between consecutive lines around the migration is its downtime.
 *
 * Environment (all optional): BENCH_ROUNDS (default 3: every size and method that many times, the report
 * giving medians), BENCH_SIZES_MIB (default "64,512,1024"), BENCH_METHODS (default
 * "ferry-auto,ferry-noprecopy,ferry,ferry-tunnel,ferry-nats,ferry-postcopy,criu,criu-kept"), BENCH_MIGRATE_ARGS (extra `ferry migrate` arguments, e.g. "--restore eager"), BENCH_LOCAL_DIR_MIB (the local-dir row's dir, default 512; 0 skips it),
 * BENCH_LOGS=DIR (copies the cluster's logs there at the end), BENCH_PERF=DIR (a system-wide `perf record` of each migration alone, from just before it starts
 * to its end, into DIR/<size>-<method>.data; `perf report -i FILE --sort comm,dso` splits it; on this VM kind perf also
 * counts the stalls of first writes to fresh memory, BENCH_THREADS does not), BENCH_THREADS=1 (each ferry row's CPU by
 * process and thread, from /proc).
 */
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const { startLocalCluster, stopLocalCluster, dev } = require('@ferry/dev-cluster');
const { bareNatsStream, freshMemory, NATS_STREAM_CHUNKS, rawTcpStream, STREAM_BYTES } = require('./ceilings');
const { cpuOfProcessesWithArg, cpuSeconds, resetPeakRss, rssOf, sampleThreadCpu } = require('./proc-stats');
const { fmt, report } = require('./report');

const execFileAsync = promisify(execFile);

const CLUSTER = 'bench';
/** 198.18.240.0/24: no test uses it. */
const SUBNET_INDEX = 240;
const SIZES_MIB = (process.env.BENCH_SIZES_MIB || '64,512,1024').split(',').map(Number);
/**
 * ferry-auto = the default (`--transport auto`: the streamed dump where both probes allow it, its
 * memory pre-copied while the workload runs), ferry-noprecopy (the same with `--precopy off`: all
 * memory crosses while it is frozen), ferry = `--transport direct` (the same where it streams: ferry's own sealed TCP stream),
 * ferry-tunnel (`--transport page-tunnel`: CRIU's page-server protocol through ferry's sealed
 * tunnel), ferry-nats (the stream through nats-server), ferry-ps (`--transport page-server`), ferry-postcopy (`--restore post-copy`:
 * the workload resumes before its memory moves; the memory follows from the source, direct path),
 * criu (CRIU's own, by hand: the dump kills the source), criu-kept (the same with `--leave-stopped`, the
 * source killed once the restore is done, as ferry keeps it: on one machine a restore after the source's
 * death reuses the memory it freed, which two hosts never can, and here fresh memory costs far more).
 */
const METHODS = (process.env.BENCH_METHODS || 'ferry-auto,ferry-noprecopy,ferry,ferry-tunnel,ferry-nats,ferry-postcopy,criu,criu-kept').split(',');
const FERRY_METHODS = {
  'ferry-auto': { transport: 'auto', args: [] },
  ferry: { transport: 'direct', args: [] },
  'ferry-nats': { transport: 'nats', args: [] },
  'ferry-ps': { transport: 'page-server', args: [] },
  'ferry-tunnel': { transport: 'page-tunnel', args: [] },
  'ferry-postcopy': { transport: 'auto', args: ['--restore', 'post-copy'] },
  'ferry-eager': { transport: 'auto', args: ['--restore', 'eager'] },
  'ferry-noprecopy': { transport: 'auto', args: ['--precopy', 'off'] },
};
const MIGRATE_ARGS = (process.env.BENCH_MIGRATE_ARGS || '').split(' ').filter(Boolean);
/** The local dir of the local-dir row (`ferry run --local-dir`); 0 skips it. */
const LOCAL_DIR_MIB = Number(process.env.BENCH_LOCAL_DIR_MIB ?? 512);
/** Rounds of every size and method; the report gives each row's median over them. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const MIB = 1024 * 1024;
/** Heartbeats seen before a migration starts, so the workload is surely past its allocation. */
const WARMUP_HEARTBEATS = 30;
/** Time after a migration in which heartbeats still count (the restored workload's first lines). */
const SETTLE_MS = 500;
const CRIU_TIMEOUT_MS = 5 * 60_000;
const REPO = path.join(__dirname, '..');
const FERRY_BIN = path.join(REPO, 'packages', 'cli', 'bin', 'ferry.js');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PERF_DIR = process.env.BENCH_PERF || '';
/** BENCH_THREADS=1: each ferry row's detail splits its CPU by process and thread (proc-stats.js). */
const THREADS = process.env.BENCH_THREADS === '1';

/** With BENCH_PERF: a system-wide profile of whatever `run` does (a migration), else just `run`. */
async function profiled(label, run) {
  if (!PERF_DIR) return run();
  fs.mkdirSync(PERF_DIR, { recursive: true });
  const file = path.join(PERF_DIR, `${label.replace(/[^A-Za-z0-9.-]+/g, '-')}.data`);
  const perf = require('node:child_process').spawn('perf', ['record', '-a', '-g', '-F', '499', '-o', file], { stdio: 'ignore' });
  const exited = new Promise((resolve) => perf.once('exit', resolve));
  await sleep(500); // perf is recording before the migration starts
  try {
    return await run();
  } finally {
    perf.kill('SIGINT');
    await exited;
  }
}
const log = (...args) => console.error('[bench]', ...args);

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The CLI's NATS credentials file of the bench cluster (the dev cluster turns NATS auth on). */
let cliCredentials = null;

async function ferry(natsUrl, args, timeoutMs = 10 * 60_000) {
  try {
    const { stdout } = await execFileAsync(process.execPath, [FERRY_BIN, ...args], {
      env: { ...process.env, FERRY_NATS_URL: natsUrl, ...(cliCredentials ? { FERRY_NATS_CREDENTIALS: cliCredentials } : {}) },
      timeout: timeoutMs,
      maxBuffer: 16 * MIB,
    });
    return args.includes('--json') ? JSON.parse(stdout) : stdout;
  } catch (err) {
    throw new Error(`ferry ${args.join(' ')} failed: ${err.stdout || ''} ${err.stderr || err.message}`);
  }
}

function readHeartbeats(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter(Number.isFinite);
}

async function waitForHeartbeats(file, count, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fs.existsSync(file) && readHeartbeats(file).length >= count) return;
    await sleep(50);
  }
  throw new Error(`workload writing ${file} did not start within ${timeoutMs} ms`);
}

/** The longest gap between consecutive heartbeats from `fromS` on, in ms. */
function maxGapMs(file, fromS) {
  const beats = readHeartbeats(file);
  let max = 0;
  for (let i = 1; i < beats.length; i++) {
    if (beats[i] < fromS) continue;
    max = Math.max(max, beats[i] - beats[i - 1]);
  }
  return max * 1000;
}

async function launch(natsUrl, name, mib, heartbeatFile, runArgs = []) {
  // A method listed twice in BENCH_METHODS runs a workload of the same name again: its beats must not
  // count the last run's (the warm-up would pass at once and the gap between the runs count as downtime).
  fs.rmSync(heartbeatFile, { force: true });
  await ferry(natsUrl, ['run', '--host', 'h1', '--name', name, ...runArgs, '--', '/usr/bin/python3', path.join(__dirname, 'heartbeat-workload.py'), heartbeatFile, String(mib)]);
  await waitForHeartbeats(heartbeatFile, WARMUP_HEARTBEATS);
  const ps = await ferry(natsUrl, ['ps', '--json']);
  const w = ps.find((x) => x.name === name);
  if (!w) throw new Error(`workload ${name} not listed`);
  return w.pid;
}

// ---- local dirs (ferry run --local-dir) ----

/** Fills DIR on h1 with MIB MiB in 4 files of random-looking 1 MiB blocks. */
const FILL_DIR = `
import os, sys
d, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
block = bytearray(os.urandom(1 << 20))
for i in range(4):
    with open(os.path.join(d, "part-%d.bin" % i), "wb") as f:
        for j in range(mib // 4):
            block[0:8] = (i * 100000 + j).to_bytes(8, "little")
            f.write(block)
`;

/**
 * A 64 MiB workload with a local dir of DIR_MIB, and the same with an empty one: the first pass's
 * rate (the dir's bytes over phases.localDirMs, while the workload runs) against the raw TCP
 * stream, and both downtimes.
 */
async function localDirMigration(ctx, dirMib) {
  const out = {};
  for (const [label, mib] of [['empty', 0], ['full', dirMib]]) {
    const name = `bl${label}`;
    const dir = `/srv/bench-${label}`;
    await dev.hostExec(CLUSTER, 'h1', ['python3', '-c', FILL_DIR, dir, String(mib)], { timeoutMs: 120_000 });
    const heartbeatFile = path.join(ctx.scratch, `${name}.beats`);
    await launch(ctx.natsUrl, name, 64, heartbeatFile, ['--local-dir', dir]);
    const cpuBefore = ctx.clusterCpu();
    const startS = Date.now() / 1000;
    const result = await ferry(ctx.natsUrl, ['migrate', name, '--to', 'h2', '--json', ...MIGRATE_ARGS]);
    const cpu = ctx.clusterCpu() - cpuBefore;
    await sleep(SETTLE_MS);
    if (result.state !== 'succeeded') throw new Error(`migration of ${name} ended ${result.state}: ${JSON.stringify(result.error)}`);
    out[label] = { downtimeMs: maxGapMs(heartbeatFile, startS), localDirMs: result.phases.localDirMs ?? 0, cpu };
    await ferry(ctx.natsUrl, ['stop', name]);
    await dev.hostExec(CLUSTER, 'h2', ['rm', '-rf', dir], { timeoutMs: 60_000 });
  }
  return { dirMib, mbps: dirMib / (out.full.localDirMs / 1000), ...out };
}

// ---- the two methods ----

/** Post-copy: the bytes moved (nearly all of them after the resume) over the time the pull took. */
const pullMbps = (result) => result.bytesTransferred / MIB / (result.phases.pullMs / 1000);

async function ferryMigration(ctx, mib, { transport, args }) {
  const postCopy = args.includes('post-copy');
  const name = `bf${mib}${transport.slice(0, 2)}${postCopy ? 'pc' : ''}${args.includes('eager') ? 'eg' : ''}${args.includes('--precopy') ? 'np' : ''}`;
  const heartbeatFile = path.join(ctx.scratch, `${name}.beats`);
  await launch(ctx.natsUrl, name, mib, heartbeatFile);
  const rssBefore = ctx.agentPids.map((pid) => (resetPeakRss(pid), rssOf(pid).rss));
  const cpuBefore = ctx.clusterCpu();
  const threads = THREADS ? sampleThreadCpu(ctx.cpuPids) : undefined;
  const startS = Date.now() / 1000;
  const result = await profiled(`${mib}-${name}`, () => ferry(ctx.natsUrl, ['migrate', name, '--to', 'h2', '--json', '--transport', transport, ...args, ...MIGRATE_ARGS]));
  const totalMs = Date.now() - startS * 1000;
  // The restored workload's own CPU is counted for both methods (cpuOfProcessesWithArg says why).
  const cpu = ctx.clusterCpu() - cpuBefore + cpuOfProcessesWithArg(heartbeatFile);
  const byThread = threads?.stop();
  // The larger of the two agents' growth: each holds at most its bounded buffers, never an image.
  const rssGrowth = Math.max(...ctx.agentPids.map((pid, i) => rssOf(pid).peak - rssBefore[i]));
  await sleep(SETTLE_MS);
  if (result.state !== 'succeeded') throw new Error(`ferry migration of ${name} ended ${result.state}: ${JSON.stringify(result.error)}`);
  const downtimeMs = maxGapMs(heartbeatFile, startS);
  await ferry(ctx.natsUrl, ['stop', name]);
  // With the page server the pages move during the dump: count both phases. In post-copy they move
  // after the resume: the small image's transfer, then the pull until the last page (phases.pullMs).
  // With memory pre-copy the stream starts with its pass, before the freeze: phases.transferMs spans both.
  const transferMs = postCopy
    ? result.phases.transferMs + (result.phases.pullMs ?? 0)
    : result.phases.transferMs + (result.transport === 'page-server' || result.transport === 'page-tunnel' ? result.phases.dumpMs : 0);
  // A streamed dump names its memory path beside the wire it took: `stream/direct`.
  const wire = result.memory === 'stream' ? `stream/${result.transport}` : result.transport;
  return {
    method: `ferry ${postCopy ? 'post-copy' : args.includes('eager') ? '--restore eager' : args.includes('--precopy') ? '--precopy off' : transport === 'auto' ? 'default' : ''} (${wire})`.replace('  ', ' '),
    downtimeMs,
    reportedDowntimeMs: result.downtimeMs,
    mbps: transferMs > 0 ? result.bytesTransferred / MIB / (transferMs / 1000) : NaN,
    totalMs,
    cpu,
    bytes: result.bytesTransferred,
    rssGrowth,
    detail:
      (result.phases.precopyMs ? `pre-copy ${result.phases.precopyMs} ms (${((result.precopyBytes ?? 0) / MIB).toFixed(0)} MiB, the workload running), then ` : '') +
      `dump ${result.phases.dumpMs} ms, transfer ${result.phases.transferMs} ms, restore ${result.phases.restoreMs} ms` +
      `${postCopy ? `, pages pulled in ${result.phases.pullMs} ms after the resume (${fmt(pullMbps(result))} MB/s)` : ''}, ${(result.bytesTransferred / MIB).toFixed(0)} MiB` +
      (byThread ? `; CPU s by process:thread ${byThread.map(([n, sec]) => `${n} ${sec.toFixed(2)}`).join(', ')}` : ''),
    pullMbps: postCopy ? pullMbps(result) : undefined,
  };
}

async function waitForListener(host, port, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { stdout } = await dev.hostExec(CLUSTER, host, ['ss', '-Hltn', `sport = :${port}`]);
    if (stdout.trim() !== '') return;
    await sleep(20);
  }
  throw new Error(`nothing listens on ${host}:${port}`);
}

/** CRIU's own migration by hand: page server on the target, dump to it, copy the rest, restore. */
async function criuPageServerMigration(ctx, mib, keepSource) {
  const name = `bc${mib}`;
  const heartbeatFile = path.join(ctx.scratch, `${name}.beats`);
  // In the host's mount namespace: plain `criu dump` of a tree with a mount namespace of its own
  // needs its mounts declared; ferry's rows move the workload in its own root, which they rebuild.
  const pid = await launch(ctx.natsUrl, name, mib, heartbeatFile, ['--host-root']);
  // tmpfs, like the agents' work dirs.
  const src = fs.mkdtempSync('/dev/shm/ferry-bench-src-');
  const dst = fs.mkdtempSync('/dev/shm/ferry-bench-dst-');
  const env = ctx.needsFaultInjection ? { CRIU_FAULT: '130' } : {};
  const port = 30_000 + Math.floor(Math.random() * 10_000);
  const address = ctx.hosts.h2.address;
  try {
    const cpuBefore = cpuSeconds(process.pid);
    const server = await dev.startProcessInHost(
      CLUSTER, 'h2',
      ['criu', 'page-server', '--images-dir', dst, '--address', address, '--port', String(port), '--log-file', 'page-server.log', '-v4'],
      { env, cwd: dst, logPath: path.join(ctx.scratch, `${name}-page-server.out`) },
    );
    const serverExited = new Promise((resolve) => server.child.once('exit', resolve));
    await waitForListener('h2', port);
    const startS = Date.now() / 1000;
    const dumpStart = Date.now();
    await dev.hostExec(CLUSTER, 'h1',
      ['criu', 'dump', '--tree', String(pid), '--images-dir', src, '--log-file', 'dump.log', '-v4', '--page-server', '--address', address, '--port', String(port), ...(keepSource ? ['--leave-stopped'] : [])],
      { env, cwd: src, timeoutMs: CRIU_TIMEOUT_MS });
    const dumpMs = Date.now() - dumpStart;
    await serverExited;
    // The non-memory images travel by hand (what scp would do between real hosts).
    for (const f of fs.readdirSync(src)) {
      if (!f.endsWith('.log') && !fs.existsSync(path.join(dst, f))) fs.copyFileSync(path.join(src, f), path.join(dst, f));
    }
    await dev.hostExec(CLUSTER, 'h2',
      ['criu', 'restore', '--restore-detached', '--images-dir', dst, '--log-file', 'restore.log', '-v4', '--pidfile', path.join(dst, 'restored.pid')],
      { env, cwd: dst, timeoutMs: CRIU_TIMEOUT_MS });
    const totalMs = Date.now() - startS * 1000;
    // CRIU's processes, and the restored workload's own CPU: CRIU's restorer fills its memory there.
    const cpu = cpuSeconds(process.pid) - cpuBefore + cpuOfProcessesWithArg(heartbeatFile);
    // Kept stopped by the dump until the restore had the workload running (what ferry does).
    if (keepSource) process.kill(pid, 'SIGKILL');
    await sleep(SETTLE_MS);
    const downtimeMs = maxGapMs(heartbeatFile, startS);
    const restoredPid = Number(fs.readFileSync(path.join(dst, 'restored.pid'), 'utf8').trim());
    // The init of its PID namespace: its death takes the tree with it.
    process.kill(restoredPid, 'SIGKILL');
    const pageBytes = fs.readdirSync(dst).filter((f) => f.startsWith('pages-')).reduce((s, f) => s + fs.statSync(path.join(dst, f)).size, 0);
    return {
      method: keepSource ? 'criu page-server, source kept' : 'criu page-server',
      downtimeMs,
      mbps: pageBytes / MIB / (dumpMs / 1000),
      totalMs,
      cpu,
      bytes: pageBytes,
      detail: `dump to page server ${dumpMs} ms (MB/s = pages / dump time)`,
    };
  } finally {
    await ferry(ctx.natsUrl, ['stop', name]).catch(() => undefined);
    fs.rmSync(src, { recursive: true, force: true });
    fs.rmSync(dst, { recursive: true, force: true });
  }
}

// ---- the run ----

/** The path's ceilings, measured again each round: raw TCP, bare NATS (both message sizes, the faster counts), fresh memory. */
async function measureCeilings(state, hosts) {
  log('raw TCP stream');
  const tcp = await rawTcpStream(CLUSTER, hosts);
  log(`raw TCP ${fmt(tcp.mbps)} MB/s; bare NATS stream`);
  const natsPids = state.processes.filter((p) => p.role === 'nats').map((p) => p.pid);
  const natsCpu = () => natsPids.reduce((s, pid) => s + cpuSeconds(pid), 0);
  const natsRuns = [];
  for (const chunk of NATS_STREAM_CHUNKS) natsRuns.push(await bareNatsStream(CLUSTER, state.hostNatsUrl, state.credentials?.admin, chunk, natsCpu));
  const nats = natsRuns.reduce((best, run) => (run.mbps > best.mbps ? run : best));
  log(`bare NATS ${natsRuns.map((run) => `${fmt(run.mbps)} MB/s (${run.chunk.bytes / MIB} MiB messages)`).join(', ')}; fresh memory`);
  const fresh = freshMemory();
  log(`fresh memory ${fmt(fresh.mbps)} MB/s, rewritten ${fmt(fresh.rewriteMbps)} MB/s`);
  return { tcp, nats, fresh };
}

async function main() {
  const natsPort = await freePort();
  const redisPort = await freePort();
  await stopLocalCluster(CLUSTER).catch(() => undefined);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-'));
  const startedAt = new Date();
  log(`starting cluster '${CLUSTER}'`);
  const state = await startLocalCluster({ name: CLUSTER, hosts: 2, subnetIndex: SUBNET_INDEX, natsPort, redisPort, readyTimeoutMs: 90_000 });
  cliCredentials = state.credentials?.cli ?? null;
  try {
    const hostList = await ferry(state.natsUrl, ['hosts', '--json']);
    const hosts = Object.fromEntries(hostList.map((h) => [h.name, h]));
    const cpuPids = state.processes.filter((p) => p.role === 'agent' || p.role === 'nats').map((p) => p.pid);
    const ctx = {
      natsUrl: state.natsUrl,
      hosts,
      scratch,
      needsFaultInjection: hostList.some((h) => h.criu.needsFaultInjection),
      cpuPids,
      clusterCpu: () => cpuPids.reduce((s, pid) => s + cpuSeconds(pid), 0),
      agentPids: state.processes.filter((p) => p.role === 'agent').map((p) => p.pid),
    };
    const rounds = [];
    for (let round = 0; round < ROUNDS; round++) {
      const ceilings = await measureCeilings(state, hosts);
      const rows = [];
      for (const mib of SIZES_MIB) {
        // Each round starts the list one method later: the first migration of a size is the costliest
        // (it finds the least freshly freed memory), and no method should always be first.
        for (const key of [...METHODS.slice(round % METHODS.length), ...METHODS.slice(0, round % METHODS.length)]) {
          log(`round ${round + 1}/${ROUNDS}, ${mib} MiB: ${key}`);
          let r;
          try {
            r = key === 'criu' || key === 'criu-kept' ? await criuPageServerMigration(ctx, mib, key === 'criu-kept') : await ferryMigration(ctx, mib, FERRY_METHODS[key]);
          } catch (err) {
            // One failed migration (e.g. CRIU losing a race with another dump on a shared machine) is a row, not the end of the run.
            const message = String(err.message).replace(/\s+/g, ' ').slice(0, 600);
            log(`${mib} MiB ${key} failed: ${message}`);
            r = { method: `${key} (FAILED)`, downtimeMs: NaN, mbps: NaN, totalMs: NaN, cpu: NaN, detail: `failed: ${message}` };
          }
          rows.push({ mib, key, ...r });
          log(`${mib} MiB ${r.method}: downtime ${fmt(r.downtimeMs)} ms, ${fmt(r.mbps)} MB/s, total ${fmt(r.totalMs)} ms; ${r.detail}`);
        }
      }
      rounds.push({ ceilings, rows });
    }
    let localDir;
    if (LOCAL_DIR_MIB > 0) {
      log(`local dir of ${LOCAL_DIR_MIB} MiB`);
      try {
        localDir = await localDirMigration(ctx, LOCAL_DIR_MIB);
      } catch (err) {
        localDir = { failed: String(err.message).slice(0, 600) };
      }
    }
    const text = report(rounds, localDir, STREAM_BYTES);
    const elapsedS = (Date.now() - startedAt.getTime()) / 1000;
    console.log(text);
    const md = [
      '# ferry migration benchmark',
      '',
      `Run ${startedAt.toISOString()} by \`npm run bench\` (${elapsedS.toFixed(0)} s), ${os.cpus().length} cores, ` +
        `${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB, Linux ${os.release()}${MIGRATE_ARGS.length ? `, migrate args \`${MIGRATE_ARGS.join(' ')}\`` : ''}.`,
      `${ROUNDS} round${ROUNDS === 1 ? '' : 's'}: each measures the ceilings and then every size and method, each round's method order starting one later; ` +
        "a row's ratios are taken against the same round's CRIU row and ceilings, and the table gives the median of each value over the rounds.",
      'Downtime: the longest gap in a heartbeat the workload writes every 10 ms (so it includes up to ~10 ms of its sleep).',
      "ferry's rows move the workload in its own root (its mount namespace, rebuilt on the target); CRIU's runs it with `--host-root` (plain `criu dump`).",
      'CPU s: ferry = both agents (their CRIU children included) + nats-server; CRIU = the criu processes; both + the restored workload\'s own processes ' +
        "(CRIU's restorer fills their memory in them; ferry's lazy restore in CRIU's lazy-pages daemon, the agent's child). CPU s/GiB: per GiB moved.",
      "`criu page-server, source kept`: CRIU's migration with the source stopped, not killed, until the restore is done (as ferry keeps it); " +
        'on one machine the plain one restores into the memory its source just freed, which two hosts never can. Ratios are against the plain one.',
      "Agent RSS + MiB (max): the larger of the two agents' peak resident memory during the migration, above its RSS before it, the largest of the rounds.",
      '',
      text,
      '',
    ].join('\n');
    fs.writeFileSync(path.join(__dirname, 'results.md'), md);
  } finally {
    log('stopping cluster');
    // BENCH_LOGS=DIR keeps the cluster's logs (the agents' say what each migration did, phase by phase).
    if (process.env.BENCH_LOGS) fs.cpSync(state.layout.logDir, process.env.BENCH_LOGS, { recursive: true });
    await stopLocalCluster(CLUSTER).catch((err) => log('stop failed:', err.message));
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
