import * as net from 'node:net';
import { ErrorCode, FerryError } from '@ferry/protocol';

/** Between connection attempts while a server starts. */
const CONNECT_RETRY_INTERVAL_MS = 100;
/** One attempt; a local listener answers in well under this. */
const CONNECT_ATTEMPT_TIMEOUT_MS = 1_000;

/** True if something accepts a TCP connection on host:port right now. */
export function isPortAccepting(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const finish = (accepting: boolean) => {
      socket.destroy();
      resolve(accepting);
    };
    socket.setTimeout(CONNECT_ATTEMPT_TIMEOUT_MS, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Waits until host:port accepts TCP. `stillRunning` is asked between attempts so a server that
 * crashed fails fast instead of running out the clock.
 */
export async function waitForPort(
  what: string,
  host: string,
  port: number,
  timeoutMs: number,
  stillRunning: () => void = () => undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await isPortAccepting(host, port))) {
    stillRunning();
    if (Date.now() >= deadline) {
      throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `${what} did not accept connections on ${host}:${port} within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_INTERVAL_MS));
  }
}
