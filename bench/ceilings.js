/**
 * The ceilings migration-bench.js measures ferry against, in the same run: one raw TCP stream and a
 * bare NATS pub/sub stream between two of the cluster's hosts (bench/tcp-stream.js,
 * bench/nats-stream.js), and one thread writing fresh memory.
 */
'use strict';

const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { dev } = require('@ferry/dev-cluster');

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Bytes of the raw TCP and bare NATS streams. */
const STREAM_BYTES = 512 * MIB;
/**
 * The bare NATS stream's message sizes (the dev cluster's max_payload is 8 MB; ferry's frames are
 * 4 MiB) and window (32 MiB in flight, as ferry's): each is measured and the faster is the ceiling.
 */
const NATS_STREAM_CHUNKS = [
  { bytes: 1 * MIB, window: 32 },
  { bytes: 4 * MIB, window: 8 },
];


async function rawTcpStream(cluster, hosts) {
  const port = 20_000 + Math.floor(Math.random() * 10_000);
  const script = path.join(__dirname, 'tcp-stream.js');
  const args = [String(port), String(STREAM_BYTES)];
  const [server, client] = await Promise.all([
    dev.hostExec(cluster, 'h2', [process.execPath, script, 'server', hosts.h2.address, ...args], { timeoutMs: 120_000 }),
    dev.hostExec(cluster, 'h1', [process.execPath, script, 'client', hosts.h2.address, ...args], { timeoutMs: 120_000 }),
  ]);
  const r = JSON.parse(server.stdout);
  const cpuS = r.cpuS + JSON.parse(client.stdout).cpuS;
  return { mbps: r.bytes / MIB / (r.ms / 1000), ms: r.ms, cpuPerGiB: cpuS / (r.bytes / GIB) };
}

/** `natsCpu()`: nats-server's CPU seconds so far, to count its share of the stream's CPU. */
async function bareNatsStream(cluster, hostNatsUrl, credentialsFile, chunk, natsCpu) {
  const script = path.join(__dirname, 'nats-stream.js');
  const args = [hostNatsUrl, String(STREAM_BYTES), String(chunk.bytes), String(chunk.window), credentialsFile || ''];
  const natsBefore = natsCpu();
  const [sub, pub] = await Promise.all([
    dev.hostExec(cluster, 'h2', [process.execPath, script, 'sub', ...args], { timeoutMs: 120_000 }),
    dev.hostExec(cluster, 'h1', [process.execPath, script, 'pub', ...args], { timeoutMs: 120_000 }),
  ]);
  const r = JSON.parse(sub.stdout);
  // The server's share includes the two clients' connects: a few milliseconds.
  const cpuS = r.cpuS + JSON.parse(pub.stdout).cpuS + (natsCpu() - natsBefore);
  return { mbps: r.bytes / MIB / (r.ms / 1000), ms: r.ms, chunk, cpuPerGiB: cpuS / (r.bytes / GIB) };
}

/**
 * How fast one thread writes into memory it never wrote before, against rewriting it (in a child
 * process, STREAM_BYTES): every restore and every received page lands in fresh pages, and on a VM
 * whose host takes freed memory back (free page reporting) each first write costs a fault in the
 * host too. Post-copy's pull is CRIU's lazy-pages daemon filling the workload's memory from one
 * thread: this is its ceiling on this machine.
 */
function freshMemory() {
  const code =
    `const n=${STREAM_BYTES};const b=Buffer.allocUnsafeSlow(n);let t=process.hrtime.bigint();b.fill(1);const first=Number(process.hrtime.bigint()-t)/1e6;` +
    `t=process.hrtime.bigint();b.fill(2);const again=Number(process.hrtime.bigint()-t)/1e6;console.log(JSON.stringify({first,again}))`;
  const r = JSON.parse(execFileSync(process.execPath, ['-e', code], { encoding: 'utf8' }));
  return { mbps: STREAM_BYTES / MIB / (r.first / 1000), rewriteMbps: STREAM_BYTES / MIB / (r.again / 1000) };
}

module.exports = { bareNatsStream, freshMemory, NATS_STREAM_CHUNKS, rawTcpStream, STREAM_BYTES };
