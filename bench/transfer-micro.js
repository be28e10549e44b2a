'use strict';
/**
 * Transfer-only micro-benchmark (no CRIU, no cluster): a throwaway nats-server on loopback, an
 * ImageReceiver in a child process and sendImage in this one, moving one file of BENCH_MIB MiB
 * from tmpfs to tmpfs. Used to tune chunk size, window and hashing. `node bench/transfer-micro.js`
 * Environment: BENCH_MIB (256), BENCH_CHUNK_KIB, BENCH_WINDOW, BENCH_TRANSPORT (nats|direct),
 * BENCH_KEY=1 (seal frames with a per-run key, as migrations do), BENCH_AEAD=node (seal them with
 * node:crypto instead of the agents' in-place native AES-GCM), BENCH_PUMP=1 (with BENCH_KEY=1 and
 * BENCH_TRANSPORT=direct: file bodies through the agents' native sealed pump).
 */
const { spawn, fork } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { connect } = require('nats');
const transfer = require('@ferry/transfer');
// As the agents do (start-agent.ts); BENCH_NATS_GROWING=1 leaves nats.js's growing buffer, to compare.
if (process.env.BENCH_NATS_GROWING !== '1') transfer.presizeLargeNatsPayloads();

const MIB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The agents' in-place AES-GCM (@ferry/native), unless BENCH_AEAD=node asks for node:crypto's. */
function frameAead() {
  return process.env.BENCH_AEAD === 'node' ? {} : { frameAead: require('@ferry/native').aeadInPlace };
}

/** BENCH_PUMP=1 (direct, keyed): file bodies through the agents' native sealed pump, as migrations do. */
function filePump() {
  if (process.env.BENCH_PUMP !== '1') return {};
  const { nativeFilePump } = require('@ferry/agent/dist/migration/native-file-pump');
  return { filePump: nativeFilePump(require('@ferry/native').createLinuxSyscalls()) };
}

function cpuOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function receiverChild() {
  const [url, transferId, dir, direct, keyHex] = process.argv.slice(3);
  const nc = await connect({ servers: url });
  const imageKey = keyHex ? { imageKey: Buffer.from(keyHex, 'hex'), ...frameAead(), ...filePump() } : {};
  const r = transfer.ImageReceiver.start(nc, transferId, dir, { ...(direct === 'direct' ? { directListenAddress: '127.0.0.1' } : {}), ...imageKey });
  await r.ready();
  process.send({ ready: true });
  const stats = await r.done;
  process.send({ stats, cpu: cpuOf(process.pid) });
  await nc.close();
}

async function main() {
  const mib = Number(process.env.BENCH_MIB || 256);
  const port = 14222 + Math.floor(Math.random() * 1000);
  const base = fs.mkdtempSync('/dev/shm/ferry-xfer-');
  const src = path.join(base, 'src');
  const dst = path.join(base, 'dst');
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  const block = Buffer.alloc(MIB);
  for (let i = 0; i < MIB; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
  const fd = fs.openSync(path.join(src, 'pages-1.img'), 'w');
  for (let i = 0; i < mib; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(src, 'core-1.img'), Buffer.alloc(12345, 1));
  fs.writeFileSync(path.join(base, 'nats.conf'), `listen: "127.0.0.1:${port}"\nmax_payload: ${8 * MIB}\n`);
  const server = spawn('nats-server', ['-c', path.join(base, 'nats.conf')], { stdio: 'ignore' });
  try {
    await sleep(300);
    const url = `nats://127.0.0.1:${port}`;
    const transferId = `t${Date.now()}`;
    // BENCH_KEY=1: frames sealed with a per-run AES-256-GCM key, as in a real migration.
    const key = process.env.BENCH_KEY === '1' ? require('node:crypto').randomBytes(32) : null;
    const child = fork(__filename, ['child', url, transferId, dst, process.env.BENCH_TRANSPORT || 'nats', key ? key.toString('hex') : ''], { execArgv: process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/xb'] : [] });
    const waitMsg = () => new Promise((r) => child.once('message', r));
    await waitMsg();
    const nc = await connect({ servers: url });
    const cpu0 = cpuOf(process.pid);
    const ncpu0 = cpuOf(server.pid);
    const opts = {};
    if (process.env.BENCH_CHUNK_KIB) opts.chunkBytes = Number(process.env.BENCH_CHUNK_KIB) * 1024;
    if (process.env.BENCH_WINDOW) opts.windowChunks = Number(process.env.BENCH_WINDOW);
    if (process.env.BENCH_TRANSPORT === 'nats') opts.transport = 'nats';
    if (key) Object.assign(opts, { imageKey: key, ...frameAead(), ...filePump() });
    const resultP = waitMsg();
    const sent = await transfer.sendImage(nc, transferId, src, opts);
    const got = await resultP;
    console.log(JSON.stringify({
      mib,
      transport: sent.transport,
      mbps: Math.round(sent.bytes / MIB / (sent.elapsedMs / 1000)),
      elapsedMs: Math.round(sent.elapsedMs),
      senderCpu: +(cpuOf(process.pid) - cpu0).toFixed(2),
      receiverCpu: got.cpu,
      natsCpu: +(cpuOf(server.pid) - ncpu0).toFixed(2),
    }));
    await nc.close();
  } finally {
    server.kill();
    fs.rmSync(base, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'child') receiverChild().catch((e) => { console.error(e); process.exit(1); });
else main().catch((e) => { console.error(e); process.exitCode = 1; });
