import { connect } from 'nats';
import { z } from 'zod';
import { CoordVerb, ErrorCode, FerryError, HostInfo, natsAuthOptionsFromFile, request, subjects } from '@ferry/protocol';

/**
 * Polls the coordinator until every named host is alive; `credentialsFile`: the CLI's (or null for
 * anonymous NATS). It keeps trying while nats-server and the coordinator are still starting.
 */
export async function waitForHosts(natsUrl: string, hosts: string[], timeoutMs: number, credentialsFile: string | null = null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const nc = await connect({
    servers: natsUrl,
    name: 'ferry-dev-wait',
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    ...natsAuthOptionsFromFile(credentialsFile),
  });
  let missing = hosts;
  try {
    while (Date.now() < deadline) {
      try {
        const { hosts: known } = await request(nc, subjects.coord(CoordVerb.HOSTS), {}, z.object({ hosts: z.array(HostInfo) }), { timeoutMs: 1_000 });
        const alive = new Set(known.filter((h) => h.state === 'alive').map((h) => h.name));
        missing = hosts.filter((h) => !alive.has(h));
        if (missing.length === 0) return;
      } catch {
        // The coordinator may still be starting.
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await nc.close();
  }
  throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `hosts not registered within ${timeoutMs} ms: ${missing.join(', ')}`);
}
