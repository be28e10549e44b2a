/**
 * The local cluster behind `ferry dev` and the integration tests: the namespace machinery of ./dev
 * wired to ferry's own coordinator and agent programs.
 */
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { connect } from 'nats';
import { CoordVerb, ErrorCode, FerryError, HostInfo, request, subjects } from '@ferry/protocol';
import { rm } from 'node:fs/promises';
import { startDevCluster, stopDevCluster, type DevClusterInput, type DevClusterState, DEV_STATE_ROOT } from './dev';

export interface LocalClusterOptions {
  name?: string;
  hosts?: number;
  subnetIndex?: number;
  natsPort?: number;
  redisPort?: number;
  /** Extra environment for every agent (e.g. FERRY_LOG_LEVEL). */
  agentEnv?: Record<string, string>;
  /** Extra environment for one host's agent (e.g. a fault to inject there), over agentEnv. */
  agentEnvFor?: (host: string) => Record<string, string>;
  /** Extra environment for the coordinator. */
  coordinatorEnv?: Record<string, string>;
  readyTimeoutMs?: number;
}

function programPath(pkg: string): string {
  return join(dirname(require.resolve(`${pkg}/package.json`)), 'dist', 'main.js');
}

/** Where a cluster keeps agent inventories and workload logs (shared by its hosts, like a real shared /var/lib/ferry). */
export function clusterDataDir(name: string): string {
  return join(DEV_STATE_ROOT, name, 'data');
}

/** Starts nats, redis, the coordinator and one agent per host; resolves when every host is registered and alive. */
export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<DevClusterState> {
  const name = opts.name ?? 'ferry';
  const input: DevClusterInput = {
    name,
    hosts: opts.hosts,
    subnetIndex: opts.subnetIndex,
    natsPort: opts.natsPort,
    redisPort: opts.redisPort,
    readyTimeoutMs: opts.readyTimeoutMs,
    coordinatorCommand: (c) => ({
      argv: [process.execPath, programPath('@ferry/coordinator')],
      env: { FERRY_NATS_URL: c.natsUrl, FERRY_REDIS_URL: c.redisUrl, FERRY_FILESYSTEMS: c.filesystemsFile, ...opts.coordinatorEnv },
    }),
    agentCommand: (h) => ({
      argv: [process.execPath, programPath('@ferry/agent')],
      env: {
        FERRY_HOST: h.name,
        FERRY_ADDRESS: h.address,
        FERRY_NATS_URL: h.natsUrl,
        FERRY_DATA_DIR: clusterDataDir(name),
        FERRY_WORK_DIR: join('/run/ferry/work', name, h.name),
        ...opts.agentEnv,
        ...opts.agentEnvFor?.(h.name),
      },
    }),
    waitUntilReady: async (hosts) => {
      const natsUrl = `nats://127.0.0.1:${input.natsPort ?? 4222}`;
      await waitForHosts(natsUrl, hosts, opts.readyTimeoutMs ?? 60_000);
    },
  };
  return startDevCluster(input);
}

/** Polls the coordinator until every named host is alive. */
export async function waitForHosts(natsUrl: string, hosts: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const nc = await connect({ servers: natsUrl, name: 'ferry-dev-wait', maxReconnectAttempts: -1, waitOnFirstConnect: true });
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

/** Stops everything the cluster started (workloads too) and removes its namespaces, bridge, mounts and files. */
export async function stopLocalCluster(name = 'ferry'): Promise<void> {
  await stopDevCluster(name);
  // Agents' tmpfs work dirs lived in their hosts' mount namespaces and went with them; the empty
  // mount points remain on the machine's filesystem.
  await rm(join('/run/ferry/work', name), { recursive: true, force: true });
}
