'use strict';
/**
 * A bare NATS pub/sub stream through the cluster's nats-server: the ceiling for any transfer
 * over NATS on this machine. Raw payloads (no msgpack, no checksums), acknowledged per message so
 * the publisher keeps a bounded window in flight (without one the server cuts off a slow consumer).
 *   node nats-stream.js sub URL BYTES CHUNK WINDOW [CREDENTIALS]   prints {"bytes","ms","cpuS"} once BYTES arrived
 *   node nats-stream.js pub URL BYTES CHUNK WINDOW [CREDENTIALS]   prints {"cpuS"} once every message was acknowledged
 * cpuS: the process's CPU seconds from its first message to its last (connecting and start-up left out).
 */
const { connect } = require('nats');
const { natsAuthOptionsFromFile } = require('@ferry/protocol');
// The same nats.js as the agents, with the same fix for large messages (nats-large-payloads.ts):
// the ceiling is what this client can do, not what its doubling buffer costs.
require('@ferry/transfer').presizeLargeNatsPayloads();

const [mode, url, bytesText, chunkText, windowText, credentialsFile] = process.argv.slice(2);
/** The dev cluster's NATS requires credentials: the admin principal's file, which may use any subject. */
const auth = natsAuthOptionsFromFile(credentialsFile || null);
const total = Number(bytesText);
const chunk = Number(chunkText);
const windowMsgs = Number(windowText);
const SUBJECT = 'bench.stream';
const HELLO_TIMEOUT_MS = 200;
/** This process's CPU seconds (user + system) so far. */
const cpuS = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

async function sub() {
  const nc = await connect({ servers: url, ...auth });
  let got = 0;
  let count = 0;
  let first = 0;
  let firstCpu = 0;
  const done = new Promise((resolve) => {
    nc.subscribe(`${SUBJECT}.data`, {
      callback: (_err, msg) => {
        if (got === 0) {
          first = performance.now();
          firstCpu = cpuS();
        }
        got += msg.data.length;
        count += 1;
        nc.publish(`${SUBJECT}.ack`, Buffer.from(String(count)));
        if (got >= total) resolve({ ms: performance.now() - first, cpu: cpuS() - firstCpu });
      },
    });
  });
  nc.subscribe(`${SUBJECT}.hello`, { callback: (_err, msg) => msg.respond(Buffer.from('ok')) });
  await nc.flush();
  const { ms, cpu } = await done;
  process.stdout.write(JSON.stringify({ bytes: got, ms, cpuS: cpu }) + '\n');
  await nc.drain();
}

async function pub() {
  const nc = await connect({ servers: url, ...auth });
  for (;;) {
    try {
      await nc.request(`${SUBJECT}.hello`, Buffer.alloc(0), { timeout: HELLO_TIMEOUT_MS });
      break;
    } catch {
      // The subscriber is not up yet.
    }
  }
  let acked = 0;
  let wake = null;
  nc.subscribe(`${SUBJECT}.ack`, {
    callback: (_err, msg) => {
      acked = Number(Buffer.from(msg.data).toString());
      if (wake) { const w = wake; wake = null; w(); }
    },
  });
  await nc.flush();
  // Constant content, so handing the same buffer to every publish is safe.
  const payload = Buffer.alloc(chunk, 0x5a);
  const firstCpu = cpuS();
  let sent = 0;
  let sentMsgs = 0;
  while (sent < total) {
    while (sentMsgs - acked >= windowMsgs) await new Promise((r) => (wake = r));
    const n = Math.min(chunk, total - sent);
    nc.publish(`${SUBJECT}.data`, n === chunk ? payload : payload.subarray(0, n));
    sent += n;
    sentMsgs += 1;
  }
  while (acked < sentMsgs) await new Promise((r) => (wake = r));
  process.stdout.write(JSON.stringify({ cpuS: cpuS() - firstCpu }) + '\n');
  await nc.drain();
}

(mode === 'sub' ? sub() : pub()).catch((err) => {
  process.stderr.write(String(err && err.stack) + '\n');
  process.exit(1);
});
