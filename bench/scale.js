'use strict';
/**
 * `npm run bench:scale`: the coordinator at cluster scale, by simulation. Real nats-server, Redis
 * and coordinator (packages/coordinator/dist); simulated agents (bench/scale-agents.js: the agent
 * protocol over real NATS, no CRIU) grow 100 -> 500 -> 1,000, each reporting 20 workloads. At each
 * size: coordinator CPU and RSS while idle (heartbeats only), NATS messages/s, placement decision
 * latency over the coordinator's own host list. At 1,000: 50 hosts drained at once with the
 * coordinator's per-host limits, simulated migrations taking realistic times. Writes
 * bench/scale-results.md. A benchmark, not a test: it asserts nothing.
 *
 * Environment (optional): BENCH_SCALE_STAGES (default "100,500,1000"), BENCH_SCALE_DRAIN_HOSTS (50),
 * BENCH_SCALE_WORKLOADS (20 per agent), BENCH_SCALE_MEASURE_MS (15000).
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const { connect } = require('nats');
const { z } = require('zod');
const { CoordVerb, DrainEvent, HostInfo, decode, parseMessage, request, subjects } = require('@ferry/protocol');
const { placeWorkload } = require('@ferry/coordinator');

const REPO = path.join(__dirname, '..');
const STAGES = (process.env.BENCH_SCALE_STAGES || '100,500,1000').split(',').map(Number);
const DRAIN_HOSTS = Number(process.env.BENCH_SCALE_DRAIN_HOSTS || 50);
const PER_AGENT = Number(process.env.BENCH_SCALE_WORKLOADS || 20);
const MEASURE_MS = Number(process.env.BENCH_SCALE_MEASURE_MS || 15_000);
const AGENTS_PER_PROCESS = 100;
const CLK_TCK = 100;
const MAX_PER_SOURCE = 2;
const MAX_PER_TARGET = 2;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const children = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-scale-'));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(name, argv, env = {}) {
  const log = fs.openSync(path.join(tmp, `${name}.log`), 'a');
  const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  children.push(child);
  return child;
}

async function waitPort(port) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.end(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`port ${port} not listening`);
}

function procCpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

function procRssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function varz(port) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/varz' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(JSON.parse(body)));
    }).on('error', reject);
  });
}

/** CPU (% of one core), RSS and NATS msgs/s over `ms`. */
async function measure(coordPid, monitorPort, ms) {
  const t0 = Date.now();
  const c0 = procCpuTicks(coordPid);
  const v0 = await varz(monitorPort);
  let peakRss = 0;
  while (Date.now() - t0 < ms) {
    peakRss = Math.max(peakRss, procRssBytes(coordPid));
    await sleep(500);
  }
  const secs = (Date.now() - t0) / 1000;
  const v1 = await varz(monitorPort);
  return {
    cpuPct: ((procCpuTicks(coordPid) - c0) / CLK_TCK / secs) * 100,
    rssMiB: procRssBytes(coordPid) / 2 ** 20,
    peakRssMiB: peakRss / 2 ** 20,
    natsInPerSec: (v1.in_msgs - v0.in_msgs) / secs,
    natsOutPerSec: (v1.out_msgs - v0.out_msgs) / secs,
  };
}

async function hosts(nc) {
  return (await request(nc, subjects.coord(CoordVerb.HOSTS), {}, z.object({ hosts: z.array(HostInfo) }), { timeoutMs: 30_000 })).hosts;
}

/** Placement over the coordinator's own view of every host: p50/p99/max ms per decision. */
function placementLatency(hostList) {
  const view = hostList.map((h) => ({
    name: h.name,
    alive: h.state === 'alive',
    cordoned: h.cordoned,
    criuUsable: h.criu.usable,
    availableBytes: h.memory.availableBytes,
    workloadCount: h.workloadCount,
    incoming: 0,
    incomingBytes: 0,
  }));
  const samples = [];
  for (let i = 0; i < 2_000; i++) {
    const src = view[i % view.length];
    const t = process.hrtime.bigint();
    placeWorkload({ name: `w${i}`, host: src.name, rssBytes: 64 * 2 ** 20 }, view, { maxIncomingPerHost: MAX_PER_TARGET });
    samples.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return { p50: samples[samples.length >> 1], p99: samples[Math.floor(samples.length * 0.99)], max: samples[samples.length - 1] };
}

async function main() {
  const natsPort = await freePort();
  const monitorPort = await freePort();
  const redisPort = await freePort();
  start('nats', ['nats-server', '-a', '127.0.0.1', '-p', String(natsPort), '-m', String(monitorPort)]);
  start('redis', ['redis-server', '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmp]);
  await waitPort(natsPort);
  await waitPort(redisPort);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  // BENCH_SCALE_PROFILE_DIR=DIR writes the coordinator's V8 CPU profile there (it ends with SIGTERM).
  const profile = process.env.BENCH_SCALE_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_SCALE_PROFILE_DIR}`] : [];
  const coord = start('coordinator', [process.execPath, ...profile, path.join(REPO, 'packages/coordinator/dist/main.js')], {
    FERRY_NATS_URL: natsUrl,
    FERRY_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    FERRY_LOG_LEVEL: 'warn',
    // Simulated agents share two cores with everything else; a late beat is not a lost host.
    FERRY_HOST_LOST_AFTER_MS: '10000',
    FERRY_MAX_MIGRATIONS_PER_SOURCE: String(MAX_PER_SOURCE),
    FERRY_MAX_MIGRATIONS_PER_TARGET: String(MAX_PER_TARGET),
  });
  const nc = await connect({ servers: natsUrl, name: 'bench-scale' });
  for (let i = 0; i < 100; i++) {
    try {
      await hosts(nc);
      break;
    } catch {
      await sleep(200);
    }
  }
  const rows = [];
  let agents = 0;
  for (const target of STAGES) {
    const readies = [];
    while (agents < target) {
      const count = Math.min(AGENTS_PER_PROCESS, target - agents);
      const child = start(`agents-${agents}`, [process.execPath, path.join(__dirname, 'scale-agents.js'), natsUrl, String(agents), String(count), String(PER_AGENT)]);
      readies.push(new Promise((resolve, reject) => {
        child.stdout.on('data', (d) => d.toString().includes('ready') && resolve());
        child.once('exit', (code) => reject(new Error(`simulated agents exited (${code})`)));
      }));
      agents += count;
    }
    const t0 = Date.now();
    await Promise.all(readies);
    const registerMs = Date.now() - t0;
    await sleep(5_000);
    const m = await measure(coord.pid, monitorPort, MEASURE_MS);
    const list = await hosts(nc);
    const alive = list.filter((h) => h.state === 'alive').length;
    const workloads = list.reduce((n, h) => n + h.workloadCount, 0);
    const lat = placementLatency(list);
    const row = { agents, alive, workloads, registerMs, ...m, placement: lat };
    rows.push(row);
    process.stdout.write(`${JSON.stringify(row)}\n`);
  }

  // Drain DRAIN_HOSTS hosts at once.
  const drainHosts = Array.from({ length: DRAIN_HOSTS }, (_, i) => `sim-${String(i * Math.floor(agents / DRAIN_HOSTS)).padStart(4, '0')}`);
  const done = new Map();
  const results = [];
  const sub = nc.subscribe(subjects.event('drain'), {
    callback: (_e, msg) => {
      const ev = parseMessage(DrainEvent, decode(msg.data));
      if (ev.kind === 'done') done.set(ev.drainId, ev.summary);
      else if (ev.kind === 'result') results.push(ev.migration);
    },
  });
  await nc.flush();
  const c0 = procCpuTicks(coord.pid);
  const v0 = await varz(monitorPort);
  const t0 = Date.now();
  let peakRss = 0;
  for (const [i, host] of drainHosts.entries()) {
    await request(nc, subjects.coord(CoordVerb.DRAIN), { host, drainId: `d-bench-${i}` }, z.object({}).passthrough(), { timeoutMs: 30_000 });
  }
  while (done.size < drainHosts.length) {
    peakRss = Math.max(peakRss, procRssBytes(coord.pid));
    await sleep(500);
    if (Date.now() - t0 > 30 * 60_000) throw new Error('drain did not finish in 30 min');
  }
  const secs = (Date.now() - t0) / 1000;
  const v1 = await varz(monitorPort);
  sub.unsubscribe();
  const summaries = [...done.values()];
  const totals = results.map((m) => m.totalMs).sort((a, b) => a - b);
  const drain = {
    hosts: drainHosts.length,
    migrations: results.length,
    succeeded: summaries.reduce((n, s) => n + s.succeeded, 0),
    failed: summaries.reduce((n, s) => n + s.failed, 0),
    unplaced: summaries.reduce((n, s) => n + s.unplaced, 0),
    wallSec: secs,
    cpuPct: ((procCpuTicks(coord.pid) - c0) / CLK_TCK / secs) * 100,
    peakRssMiB: peakRss / 2 ** 20,
    natsInPerSec: (v1.in_msgs - v0.in_msgs) / secs,
    natsOutPerSec: (v1.out_msgs - v0.out_msgs) / secs,
    migrationTotalMs: { p50: totals[totals.length >> 1], p99: totals[Math.floor(totals.length * 0.99)], max: totals[totals.length - 1] },
  };
  process.stdout.write(`${JSON.stringify({ drain })}\n`);
  // Limits held: no target ever had more than MAX_PER_TARGET migrations at once (from the records).
  const overlap = maxConcurrentPerHost(results, 'to');
  const overlapSrc = maxConcurrentPerHost(results, 'from');
  writeReport(rows, drain, overlap, overlapSrc);
  await nc.close();
}

function maxConcurrentPerHost(results, key) {
  const byHost = new Map();
  for (const m of results) {
    const list = byHost.get(m[key]) || [];
    list.push([Date.parse(m.requestedAt), 1], [Date.parse(m.finishedAt), -1]);
    byHost.set(m[key], list);
  }
  let max = 0;
  for (const list of byHost.values()) {
    list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let n = 0;
    for (const [, d] of list) max = Math.max(max, (n += d));
  }
  return max;
}

function writeReport(rows, drain, maxTarget, maxSource) {
  const f = (n, d = 1) => Number(n).toFixed(d);
  const lines = [
    '# Coordinator at scale (simulated agents)',
    '',
    `Measured by \`npm run bench:scale\` on ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores (${os.cpus()[0].model}), ` +
      `${f(os.totalmem() / 2 ** 30, 0)} GiB. Real nats-server, Redis and coordinator; simulated agents (bench/scale-agents.js, ` +
      `${AGENTS_PER_PROCESS} per process, sharing the same 2 cores) each report ${PER_AGENT} workloads of 64 MiB and beat once a second. ` +
      `Idle figures are over ${MEASURE_MS / 1000} s after registration settled. CPU is the coordinator process's user+system time, % of one core.`,
    '',
    '| agents | workloads | alive | coordinator CPU (idle, heartbeats) | coordinator RSS | NATS msgs/s in / out | placement p50 / p99 / max |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) =>
      `| ${r.agents} | ${r.workloads} | ${r.alive} | ${f(r.cpuPct)} % | ${f(r.rssMiB, 0)} MiB | ${f(r.natsInPerSec, 0)} / ${f(r.natsOutPerSec, 0)} | ` +
        `${f(r.placement.p50, 3)} / ${f(r.placement.p99, 3)} / ${f(r.placement.max, 3)} ms |`,
    ),
    '',
    `## Drain of ${drain.hosts} hosts at once (${rows[rows.length - 1].agents} agents)`,
    '',
    `Limits: at most ${MAX_PER_SOURCE} migrations out of and ${MAX_PER_TARGET} into any host at once. A simulated 64 MiB migration ` +
      'takes the times measured on this machine kind (dump 2.6 s/GiB pipelined with a 0.25 GB/s transfer, restore 4.3 s/GiB) plus the real control traffic (pre-flight probe and cpuinfo round trips, Redis writes per step).',
    '',
    `| migrations | succeeded | failed | unplaced | wall time | coordinator CPU | peak RSS | NATS msgs/s in / out | migration total p50 / p99 / max | max concurrent per target / per source |`,
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${drain.migrations} | ${drain.succeeded} | ${drain.failed} | ${drain.unplaced} | ${f(drain.wallSec)} s | ${f(drain.cpuPct)} % | ${f(drain.peakRssMiB, 0)} MiB | ` +
      `${f(drain.natsInPerSec, 0)} / ${f(drain.natsOutPerSec, 0)} | ${drain.migrationTotalMs.p50} / ${drain.migrationTotalMs.p99} / ${drain.migrationTotalMs.max} ms | ${maxTarget} / ${maxSource} |`,
    '',
  ];
  fs.writeFileSync(path.join(__dirname, 'scale-results.md'), `${lines.join('\n')}\n`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main()
  .catch((err) => {
    process.stderr.write(`bench:scale: ${err.stack || err}\n(logs in ${tmp})\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const c of children.reverse()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await sleep(500);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
  });
