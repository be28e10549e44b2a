import { connect } from 'nats';
import { natsAuthOptionsFromFile, waitForHostsAlive } from '@ferry/protocol';

/**
 * Polls the coordinator until every named host is alive; `credentialsFile`: the CLI's (or null for
 * anonymous NATS). It keeps trying while nats-server and the coordinator are still starting.
 */
export async function waitForHosts(natsUrl: string, hosts: string[], timeoutMs: number, credentialsFile: string | null = null): Promise<void> {
  const nc = await connect({
    servers: natsUrl,
    name: 'ferry-dev-wait',
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    ...natsAuthOptionsFromFile(credentialsFile),
  });
  try {
    await waitForHostsAlive(nc, hosts, timeoutMs);
  } finally {
    await nc.close();
  }
}
