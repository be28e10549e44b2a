/**
 * Waiting for hosts to be alive in the coordinator's view: what `ferry hosts add` does after
 * installing an agent, and the dev cluster after starting its agents. The caller owns the
 * connection (protocol imports only NATS types).
 */
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError } from './errors';
import { CoordVerb } from './subjects';
import { requestCoordVerb } from './verbs';

/** How often the coordinator is asked while hosts are missing. */
const POLL_INTERVAL_MS = 250;
/** One question's timeout: the coordinator may be starting, restarting or not elected yet. */
const ASK_TIMEOUT_MS = 1_000;

/** Resolves once every host in `hosts` is alive; DEADLINE_EXCEEDED naming the missing ones after `timeoutMs`. */
export async function waitForHostsAlive(nc: NatsConnection, hosts: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let missing = hosts;
  while (Date.now() < deadline) {
    try {
      const { hosts: known } = await requestCoordVerb(nc, CoordVerb.HOSTS, {}, { timeoutMs: ASK_TIMEOUT_MS });
      const alive = new Set(known.filter((h) => h.state === 'alive').map((h) => h.name));
      missing = hosts.filter((h) => !alive.has(h));
      if (missing.length === 0) return;
    } catch {
      // The coordinator may still be starting, restarting or not elected yet.
    }
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
  throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `hosts not registered within ${timeoutMs} ms: ${missing.join(', ')}`);
}
