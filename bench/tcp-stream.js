'use strict';
/**
 * One raw TCP stream, the wire's ceiling on the path the agents use.
 *   node tcp-stream.js server HOST PORT BYTES   prints {"bytes","ms","cpuS"} once BYTES arrived
 *   node tcp-stream.js client HOST PORT BYTES   sends BYTES (retries the connect until the server listens), prints {"cpuS"}
 * cpuS: the process's CPU seconds from the connection to the last byte (start-up left out).
 * Time runs on the server from the first byte to the last.
 */
const net = require('node:net');

const [mode, host, portText, bytesText] = process.argv.slice(2);
const port = Number(portText);
const total = Number(bytesText);
const BLOCK_BYTES = 1024 * 1024;
const CONNECT_RETRY_MS = 50;
/** This process's CPU seconds (user + system) so far. */
const cpuS = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

if (mode === 'server') {
  const server = net.createServer((sock) => {
    let got = 0;
    let first = 0;
    const firstCpu = cpuS();
    sock.on('data', (d) => {
      if (got === 0) first = performance.now();
      got += d.length;
      if (got >= total) {
        process.stdout.write(JSON.stringify({ bytes: got, ms: performance.now() - first, cpuS: cpuS() - firstCpu }) + '\n');
        sock.destroy();
        server.close();
      }
    });
  });
  server.listen(port, host);
} else {
  const block = Buffer.alloc(BLOCK_BYTES, 0x5a);
  const attempt = () => {
    const sock = net.connect(port, host);
    sock.once('error', () => setTimeout(attempt, CONNECT_RETRY_MS));
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      const firstCpu = cpuS();
      sock.once('close', () => process.stdout.write(JSON.stringify({ cpuS: cpuS() - firstCpu }) + '\n'));
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          const n = Math.min(BLOCK_BYTES, total - sent);
          sent += n;
          if (!sock.write(n === BLOCK_BYTES ? block : block.subarray(0, n))) return void sock.once('drain', pump);
        }
        sock.end();
      };
      pump();
    });
  };
  attempt();
}
