/**
 * The local cluster behind `ferry dev` and the integration tests: the namespace machinery of ./dev
 * wired to ferry's own coordinator and agent programs.
 */
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { DEFAULT_HTTP_PORT } from '@ferry/coordinator';
import { startDevCluster, stopDevCluster, writeClusterState, type DevClusterInput, type DevClusterState, type DevHostContext, type DevProcessCommand, DEV_STATE_ROOT } from './dev';
import { devHttpTokenFiles, writeDevHttpTokens } from './dev-http-tokens';
import { devCliCredentialsFile } from './dev/nats-security';
import { startKafkaBroker, stopKafkaBroker } from './kafka-broker';
import { devKafkaCoordinatorEnv, type DevKafkaRecord } from './kafka-security';
import { waitForHosts } from './wait-for-hosts';

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
  /** Hosts whose agent is started directly (default all); with `hostSshd`, the others can be added by `ferry hosts add`. */
  agentHosts?: string[];
  /** Run an OpenSSH server in every agent host. */
  hostSshd?: boolean;
  /** NATS users and subject permissions per role (default true); false: anonymous NATS. */
  natsAuth?: boolean;
  /** nats-server requires TLS (`ferry dev up --tls`); needs natsAuth. */
  natsTls?: boolean;
}

/** Agents' work dirs, per cluster and host. */
const WORK_ROOT = '/run/ferry/work';

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

/** A host agent's FERRY_WORK_DIR: a tmpfs mount point inside that host's mount namespace. */
export function agentWorkDir(name: string, host: string): string {
  return join(WORK_ROOT, name, host);
}

/** What a started agent gets on top of its cluster's settings; `startLocalHost` takes the same. */
export type LocalAgentOptions = Pick<LocalClusterOptions, 'agentEnv' | 'agentEnvFor'>;

/** The command every directly started agent of cluster `name` runs: `startLocalCluster` and `startLocalHost` share it. */
export function localAgentCommand(name: string, opts: LocalAgentOptions): (h: DevHostContext) => DevProcessCommand {
  return (h) => ({
    argv: [process.execPath, programPath('@ferry/agent')],
    env: {
      FERRY_HOST: h.name,
      FERRY_ADDRESS: h.address,
      FERRY_NATS_URL: h.natsUrl,
      ...credentialsEnv(h.natsCredentialsFile),
      FERRY_DATA_DIR: clusterDataDir(name),
      FERRY_WORK_DIR: agentWorkDir(name, h.name),
      ...opts.agentEnv,
      ...opts.agentEnvFor?.(h.name),
    },
  });
}

/** Starts nats, redis, the coordinator and one agent per host; resolves when every host is registered and alive. */
export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<DevClusterState> {
  const name = opts.name ?? 'ferry';
  let kafka: DevKafkaRecord | null = null;
  if (opts.kafka) {
    const broker = await startKafkaBroker({ port: opts.kafkaPort ?? 9092, dataDir: kafkaDataDir(name) });
    kafka = { brokers: broker.brokers, security: broker.security };
  }
  const kafkaEnv = kafka ? devKafkaCoordinatorEnv(kafka) : {};
  const input: DevClusterInput = {
    name,
    hosts: opts.hosts,
    subnetIndex: opts.subnetIndex,
    natsPort: opts.natsPort,
    redisPort: opts.redisPort,
    readyTimeoutMs: opts.readyTimeoutMs,
    agentHosts: opts.agentHosts,
    hostSshd: opts.hostSshd,
    natsAuth: opts.natsAuth,
    natsTls: opts.natsTls,
    coordinatorCommand: (c) => ({
      argv: [process.execPath, programPath('@ferry/coordinator')],
      env: {
        // Fresh viewer and operator tokens for the HTTP API (the state dir exists by now).
        FERRY_HTTP_TOKENS: writeDevHttpTokens(name).tokensFile,
        FERRY_NATS_URL: c.natsUrl,
        ...credentialsEnv(c.natsCredentialsFile),
        FERRY_REDIS_URL: c.redisUrl,
        FERRY_FILESYSTEMS: c.filesystemsFile,
        ...kafkaEnv,
        ...opts.coordinatorEnv,
      },
    }),
    agentCommand: localAgentCommand(name, opts),
    waitUntilReady: async (hosts) => {
      const natsUrl = `nats://127.0.0.1:${input.natsPort ?? 4222}`;
      await waitForHosts(natsUrl, hosts, opts.readyTimeoutMs ?? 60_000, devCliCredentials(name));
    },
  };
  try {
    const state = await startDevCluster(input);
    state.kafka = kafka;
    state.http = { url: httpUrl(opts.coordinatorEnv), ...devHttpTokenFiles(name) };
    writeClusterState(state);
    return state;
  } catch (err) {
    if (opts.kafka) await stopKafkaBroker(kafkaDataDir(name)).catch(() => undefined);
    throw err;
  }
}

/** The coordinator's HTTP URL from its environment (as its main.ts reads it). */
function httpUrl(env: Record<string, string> = {}): string | null {
  if (env.FERRY_HTTP_PORT === 'off') return null;
  const address = env.FERRY_HTTP_ADDRESS || '127.0.0.1';
  return `http://${address === '0.0.0.0' ? '127.0.0.1' : address}:${env.FERRY_HTTP_PORT || DEFAULT_HTTP_PORT}`;
}

/** FERRY_NATS_CREDENTIALS for a role's credentials file; nothing when the cluster runs anonymous NATS. */
function credentialsEnv(file: string | null): Record<string, string> {
  return file === null ? {} : { FERRY_NATS_CREDENTIALS: file };
}

/** The dev cluster's operator (CLI) credentials file, or null when it runs NATS without auth. */
export function devCliCredentials(name: string): string | null {
  const file = devCliCredentialsFile(join(DEV_STATE_ROOT, name));
  return existsSync(file) ? file : null;
}

/** Stops everything the cluster started (workloads too) and removes its namespaces, bridge, mounts and files. */
export async function stopLocalCluster(name = 'ferry'): Promise<void> {
  await stopDevCluster(name);
  await stopKafkaBroker(kafkaDataDir(name));
  await rm(kafkaDataDir(name), { recursive: true, force: true });
  // Agents' tmpfs work dirs lived in their hosts' mount namespaces and went with them; the empty
  // mount points remain on the machine's filesystem.
  await rm(join(WORK_ROOT, name), { recursive: true, force: true });
}
