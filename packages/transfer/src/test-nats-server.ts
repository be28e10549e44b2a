/**
 * Test support (not exported from the package): a real nats-server on a free loopback port,
 * started per test file and stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect as tcpConnect } from 'node:net';

const NATS_SERVER_BIN = '/usr/sbin/nats-server';
const SERVER_START_TIMEOUT_MS = 10_000;

export interface TestNatsServer {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function waitForTcp(port: number, deadlineMs: number): Promise<void> {
  while (Date.now() < deadlineMs) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = tcpConnect(port, '127.0.0.1');
      sock.once('connect', () => (sock.destroy(), resolve(true)));
      sock.once('error', () => (sock.destroy(), resolve(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not listen on ${port}`);
}

export async function startTestNatsServer(): Promise<TestNatsServer> {
  const port = await freePort();
  const server: ChildProcess = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  await waitForTcp(port, Date.now() + SERVER_START_TIMEOUT_MS);
  return {
    url: `127.0.0.1:${port}`,
    async stop() {
      if (server.pid === undefined || server.exitCode !== null) return;
      const exited = new Promise((r) => server.once('exit', r));
      process.kill(server.pid, 'SIGTERM');
      await exited;
    },
  };
}
