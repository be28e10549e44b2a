/**
 * The local cluster behind `ferry dev` and the integration tests: the namespace machinery of ./dev
 * wired to ferry's own coordinator and agent programs.
 */
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { connect } from 'nats';
import { CoordVerb, ErrorCode, FerryError, HostInfo, natsAuthOptionsFromFile, request, subjects } from '@ferry/protocol';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { startDevCluster, stopDevCluster, type DevClusterInput, type DevClusterState, DEV_STATE_ROOT } from './dev';
import { devCliCredentialsFile } from './dev/nats-security';
import { startKafkaBroker, stopKafkaBroker } from './kafka-broker';
import { bootstrapDevHost } from './dev-bootstrap';

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
  /** Also start a single-node Kafka broker (KRaft) and point the coordinator at it. */
  kafka?: boolean;
  /** Its client port on 127.0.0.1 (default 9092; 0: a free one). */
  kafkaPort?: number;
  /** Start no agents directly: run sshd in every host and bootstrap each agent through it (`ferry dev up --ssh`). */
  ssh?: boolean;
  /** Hosts whose agent is started directly (default all); with `hostSshd`, the others can be added by `ferry hosts add`. */
  agentHosts?: string[];
  /** Run an OpenSSH server in every agent host (implied by `ssh`). */
  hostSshd?: boolean;
  /** NATS users and subject permissions per role (default true); false: anonymous NATS. */
  natsAuth?: boolean;
  /** nats-server requires TLS (`ferry dev up --tls`); needs natsAuth. */
  natsTls?: boolean;
}

/** Where a cluster's Kafka broker keeps its log dirs and pid (outside the dev state dir, which `dev up` rewrites). */
export function kafkaDataDir(name: string): string {
  return join('/run/ferry/kafka', name);
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
  const kafkaEnv: Record<string, string> = {};
  if (opts.kafka) {
    const broker = await startKafkaBroker({ port: opts.kafkaPort ?? 9092, dataDir: kafkaDataDir(name) });
    kafkaEnv.FERRY_KAFKA_BROKERS = broker.brokers;
  }
  const input: DevClusterInput = {
    name,
    hosts: opts.hosts,
    subnetIndex: opts.subnetIndex,
    natsPort: opts.natsPort,
    redisPort: opts.redisPort,
    readyTimeoutMs: opts.readyTimeoutMs,
    agentHosts: opts.ssh ? [] : opts.agentHosts,
    hostSshd: opts.ssh || opts.hostSshd,
    natsAuth: opts.natsAuth,
    natsTls: opts.natsTls,
    coordinatorCommand: (c) => ({
      argv: [process.execPath, programPath('@ferry/coordinator')],
      env: {
        FERRY_NATS_URL: c.natsUrl,
        ...credentialsEnv(c.natsCredentialsFile),
        FERRY_REDIS_URL: c.redisUrl,
        FERRY_FILESYSTEMS: c.filesystemsFile,
        ...kafkaEnv,
        ...opts.coordinatorEnv,
      },
    }),
    agentCommand: (h) => ({
      argv: [process.execPath, programPath('@ferry/agent')],
      env: {
        FERRY_HOST: h.name,
        FERRY_ADDRESS: h.address,
        FERRY_NATS_URL: h.natsUrl,
        ...credentialsEnv(h.natsCredentialsFile),
        FERRY_DATA_DIR: clusterDataDir(name),
        FERRY_WORK_DIR: join('/run/ferry/work', name, h.name),
        ...opts.agentEnv,
        ...opts.agentEnvFor?.(h.name),
      },
    }),
    waitUntilReady: async (hosts) => {
      const natsUrl = `nats://127.0.0.1:${input.natsPort ?? 4222}`;
      await waitForHosts(natsUrl, hosts, opts.readyTimeoutMs ?? 60_000, devCliCredentials(name));
    },
  };
  try {
    const state = await startDevCluster(input);
    if (opts.ssh) await bootstrapAllHosts(state, opts).catch(async (err: unknown) => {
      await stopDevCluster(name).catch(() => undefined);
      throw err;
    });
    return state;
  } catch (err) {
    if (opts.kafka) await stopKafkaBroker(kafkaDataDir(name)).catch(() => undefined);
    throw err;
  }
}

/** `dev up --ssh`: every host's agent installed through its sshd, one host after another. */
async function bootstrapAllHosts(state: DevClusterState, opts: LocalClusterOptions): Promise<void> {
  for (const host of state.layout.hosts) {
    await bootstrapDevHost(state, host.name, {
      dataDir: clusterDataDir(state.name),
      workDir: join('/run/ferry/work', state.name, host.name),
      extraEnv: { ...credentialsEnv(state.credentials?.agents[host.name] ?? null), ...opts.agentEnv, ...opts.agentEnvFor?.(host.name) },
      registerTimeoutMs: opts.readyTimeoutMs,
      waitUntilRegistered: (h, timeoutMs) => waitForHosts(state.natsUrl, [h], timeoutMs, state.credentials?.cli ?? null),
    });
  }
}

function credentialsEnv(file: string | null): Record<string, string> {
  return file === null ? {} : { FERRY_NATS_CREDENTIALS: file };
}

/** The dev cluster's operator (CLI) credentials file, or null when it runs NATS without auth. */
export function devCliCredentials(name: string): string | null {
  const file = devCliCredentialsFile(join(DEV_STATE_ROOT, name));
  return existsSync(file) ? file : null;
}

/** Polls the coordinator until every named host is alive; `credentialsFile`: the CLI's (or null for anonymous NATS). */
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

/** Stops everything the cluster started (workloads too) and removes its namespaces, bridge, mounts and files. */
export async function stopLocalCluster(name = 'ferry'): Promise<void> {
  await stopDevCluster(name);
  await stopKafkaBroker(kafkaDataDir(name));
  await rm(kafkaDataDir(name), { recursive: true, force: true });
  // Agents' tmpfs work dirs lived in their hosts' mount namespaces and went with them; the empty
  // mount points remain on the machine's filesystem.
  await rm(join('/run/ferry/work', name), { recursive: true, force: true });
}
