'use strict';
/**
 * Simulated agents for `npm run bench:scale`: COUNT agents in this one process, each speaking the
 * agent protocol over real NATS (register, 1 s heartbeats listing its workloads, every migration
 * verb), labelled simulated (CRIU version "simulated"), with no CRIU behind them. A migration's
 * steps take the time they take on this machine kind for the workload's size (DESIGN.md: dump
 * ~2.6 s/GiB, restore ~4.3 s/GiB, transfer ~0.25 GB/s over NATS); no image bytes are sent.
 *   node scale-agents.js NATS_URL FIRST_INDEX COUNT WORKLOADS_PER_AGENT
 * Prints "ready" once every agent registered.
 */
const { connect } = require('nats');
const { AgentVerb, FULL_HEARTBEAT_EVERY, SealKeyPair, encode, decode, subjects, workloadsDigest, PROTOCOL_VERSION } = require('@ferry/protocol');

const [natsUrl, firstArg, countArg, perAgentArg] = process.argv.slice(2);
const FIRST = Number(firstArg);
const COUNT = Number(countArg);
const PER_AGENT = Number(perAgentArg);
const HEARTBEAT_INTERVAL_MS = 1_000;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const WORKLOAD_RSS = 64 * MiB;
const HOST_TOTAL = 64 * GiB;
const DUMP_MS_PER_GIB = 2_600;
const RESTORE_MS_PER_GIB = 4_300;
const TRANSFER_BYTES_PER_MS = 250_000;
const CRIU = { version: 'simulated', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hostName(i) {
  return `sim-${String(i).padStart(4, '0')}`;
}

async function main() {
  const nc = await connect({ servers: natsUrl, name: `ferry-sim-${FIRST}`, maxReconnectAttempts: -1 });
  const agents = [];
  for (let i = FIRST; i < FIRST + COUNT; i++) agents.push(simulatedAgent(nc, i));
  await Promise.all(agents.map((a) => a.register()));
  process.stdout.write('ready\n');
  // Spread heartbeats over the second, as independent hosts would.
  agents.forEach((a, k) => setTimeout(() => setInterval(() => a.beat(), HEARTBEAT_INTERVAL_MS), (k * HEARTBEAT_INTERVAL_MS) / agents.length));
  process.on('SIGTERM', () => nc.close().finally(() => process.exit(0)));
}

function simulatedAgent(nc, index) {
  const host = hostName(index);
  const bootId = `sim${index}b${Date.now().toString(36)}`;
  // Registered like a real agent's, so the coordinator can seal migration keys to it (never opened here).
  const sealKey = SealKeyPair.generate().publicKey;
  const workloads = new Map();
  for (let k = 0; k < PER_AGENT; k++) {
    const name = `w${index}-${k}`;
    workloads.set(name, { name, host, state: 'running', pid: 100_000 + k, rssBytes: WORKLOAD_RSS, argv: ['simulated'], startedAt: new Date().toISOString(), exitCode: null, mounts: [] });
  }
  const incoming = new Map();
  let seq = 0;
  const memory = () => {
    let used = 0;
    for (const w of workloads.values()) used += w.rssBytes;
    return { totalBytes: HOST_TOTAL, availableBytes: HOST_TOTAL - used };
  };
  const reply = (msg, body) => msg.respond(encode({ ok: true, ...body }));
  const serve = (verb, fn) =>
    nc.subscribe(subjects.agent(host, verb), {
      callback: (err, msg) => {
        if (err) return;
        const req = decode(msg.data);
        Promise.resolve(fn(req)).then(
          (body) => reply(msg, body || {}),
          (e) => msg.respond(encode({ ok: false, error: { code: e.code || 'INTERNAL', message: e.message } })),
        );
      },
    });
  serve(AgentVerb.PS, () => ({ workloads: [...workloads.values()] }));
  let lastDigest = '';
  serve(AgentVerb.PROBE, () => ({ criu: CRIU, memory: memory() }));
  serve(AgentVerb.CPUINFO, () => ({ image: Buffer.from('simulated cpuinfo') }));
  // Simulated workloads hold no sockets, unlinked or local files: always movable.
  serve(AgentVerb.MIGRATABLE, () => ({ localFiles: [] }));
  serve(AgentVerb.CPUINFO_CHECK, () => ({ compatible: true }));
  serve(AgentVerb.RECEIVE, (req) => void incoming.set(req.migrationId, { workload: req.workload }));
  serve(AgentVerb.CHECKPOINT, async (req) => {
    const w = workloads.get(req.workload);
    if (!w) throw Object.assign(new Error(`no workload ${req.workload}`), { code: 'NOT_FOUND' });
    w.state = 'frozen';
    const frozenAt = Date.now();
    const dumpMs = (w.rssBytes / GiB) * DUMP_MS_PER_GIB;
    const transferMs = w.rssBytes / TRANSFER_BYTES_PER_MS;
    // The real transfer is pipelined with the dump.
    await sleep(Math.max(dumpMs, transferMs));
    return { dumpMs: Math.round(dumpMs), transferMs: Math.round(transferMs), bytes: w.rssBytes, files: 12, frozenAt };
  });
  serve(AgentVerb.RESTORE, async (req) => {
    const inc = incoming.get(req.migrationId);
    if (!inc) throw Object.assign(new Error('no image'), { code: 'NOT_FOUND' });
    const restoreMs = (WORKLOAD_RSS / GiB) * RESTORE_MS_PER_GIB;
    await sleep(restoreMs);
    const pid = 200_000 + (seq % 100_000);
    workloads.set(req.workload, { name: req.workload, host, state: 'running', pid, rssBytes: WORKLOAD_RSS, argv: ['simulated'], startedAt: new Date().toISOString(), exitCode: null, mounts: [] });
    inc.restored = true;
    return { pid, restoreMs: Math.round(restoreMs), resumedAt: Date.now() };
  });
  serve(AgentVerb.RELEASE, (req) => void workloads.delete(req.workload));
  serve(AgentVerb.SETTLE, (req) => void incoming.delete(req.migrationId));
  serve(AgentVerb.DISCARD, (req) => {
    const inc = incoming.get(req.migrationId);
    if (inc && inc.restored) workloads.delete(req.workload);
    incoming.delete(req.migrationId);
  });
  serve(AgentVerb.RESUME, (req) => {
    const w = workloads.get(req.workload);
    if (w) w.state = 'running';
  });
  serve(AgentVerb.MIGRATION_RECORD, (req) => {
    const w = workloads.get(req.workload);
    return { role: null, workloadState: w ? w.state : null, alive: Boolean(w), pid: w ? w.pid : null, inProgress: null };
  });
  return {
    async register() {
      for (;;) {
        try {
          const msg = await nc.request(
            subjects.register(host),
            encode({ v: PROTOCOL_VERSION, host, address: '127.0.0.1', criu: CRIU, memory: memory(), agentPid: process.pid, bootId, sealKey }),
            { timeout: 10_000 },
          );
          if (decode(msg.data).ok) return;
        } catch {
          // coordinator busy or starting: try again
        }
        await sleep(500);
      }
    },
    // Like a real agent: the list only when its digest changed, or every FULL_HEARTBEAT_EVERY beats.
    beat() {
      const list = [...workloads.values()];
      const digest = workloadsDigest(list);
      const n = seq++;
      const full = digest !== lastDigest || n % FULL_HEARTBEAT_EVERY === 0;
      lastDigest = digest;
      nc.publish(
        subjects.heartbeat(host),
        encode({ v: PROTOCOL_VERSION, host, bootId, address: '127.0.0.1', criu: CRIU, sealKey, seq: n, memory: memory(), workloadsDigest: digest, ...(full ? { workloads: list } : {}) }),
      );
    },
  };
}

main().catch((err) => {
  process.stderr.write(`scale-agents: ${err.stack || err}\n`);
  process.exit(1);
});
