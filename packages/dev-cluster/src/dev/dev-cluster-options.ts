import { ErrorCode, FerryError, silentLogger, type Logger } from '@ferry/protocol';

/** A process to start: argv (argv[0] looked up in PATH) and extra environment, merged over ours. */
export interface DevProcessCommand {
  argv: string[];
  env: Record<string, string>;
}

/** What the coordinator command is told about the cluster it belongs to. */
export interface DevCoordinatorContext {
  /** NATS as reached from the machine's root namespaces. */
  natsUrl: string;
  /** Redis as reached from the machine's root namespaces. */
  redisUrl: string;
  hostNames: string[];
  /** JSON list of the cluster's shared filesystems (`shared`: sshfs from the storage host). */
  filesystemsFile: string;
  /** The coordinator's NATS credentials file (FERRY_NATS_CREDENTIALS); null when NATS has no auth. */
  natsCredentialsFile: string | null;
}

/** What an agent command is told about the host it runs in. */
export interface DevHostContext {
  /** Host name (`h1`...), also its UTS hostname. */
  name: string;
  /** The host's IPv4 address on the cluster bridge. */
  address: string;
  /** NATS as reached from inside the host (the bridge address). */
  natsUrl: string;
  /** Redis as reached from inside the host (the bridge address). */
  redisUrl: string;
  /** This host's agent's NATS credentials file (FERRY_NATS_CREDENTIALS); null when NATS has no auth. */
  natsCredentialsFile: string | null;
}

export interface DevClusterOptions {
  /** Cluster name: `[a-z][a-z0-9]{0,10}` (the bridge name `fbr-<name>` must fit in 15 chars). */
  name: string;
  /** Number of hosts, h1..hN. */
  hosts: number;
  /** Picks the /24: 0..255 -> 198.18.<i>.0/24, 256..511 -> 198.19.<i-256>.0/24. */
  subnetIndex: number;
  /** nats-server client port. */
  natsPort: number;
  /** redis-server port. */
  redisPort: number;
  /**
   * true: nats-server listens on 0.0.0.0, so hosts (bridge address) and loopback both reach it.
   * false: it listens on the bridge address only; root-namespace clients then use the bridge URL.
   */
  natsListenOnAllAddresses: boolean;
  /** Command for the coordinator, run in the machine's root namespaces. */
  coordinatorCommand: (cluster: DevCoordinatorContext) => DevProcessCommand;
  /** Command for one agent, run inside its host's namespaces. */
  agentCommand: (host: DevHostContext) => DevProcessCommand;
  /** Resolves once every named host is ready (e.g. registered with the coordinator). */
  waitUntilReady: (hosts: string[]) => Promise<void>;
  /** Overall limit for nats/redis to accept connections and for `waitUntilReady`. */
  readyTimeoutMs: number;
  /** Between SIGTERM and SIGKILL when stopping processes. */
  stopGraceMs: number;
  /** Working directory of the coordinator and agents (the same path exists inside every host). */
  cwd: string;
  logger: Logger;
  /** Hosts whose agent the cluster starts itself; null: all. The others are left for `ferry hosts add` (bootstrap over SSH). */
  agentHosts: string[] | null;
  /** Run an OpenSSH server in every agent host (keys in `hostSshFiles(layout)`), for bootstrapping agents over SSH. */
  hostSshd: boolean;
  /** NATS users with subject permissions per role (credentials files 0600 in the state dir); false: anonymous NATS. */
  natsAuth: boolean;
  /**
   * nats-server requires TLS (a throwaway CA made with openssl); needs natsAuth (the CA travels in
   * the credentials files). On by default with natsAuth: the control plane carries credentials and
   * sealed keys, and the image frames' sizes and timing are nobody else's business either.
   */
  natsTls: boolean;
}

/** The cluster name `ferry dev up` uses; it gets the plain netns names h1..hN and bridge `ferry0`. */
export const DEFAULT_CLUSTER_NAME = 'ferry';
export const DEFAULT_NATS_PORT = 4222;
export const DEFAULT_REDIS_PORT = 6379;
export const DEFAULT_READY_TIMEOUT_MS = 30_000;
export const DEFAULT_STOP_GRACE_MS = 3_000;
/** Host hK gets .(10+K), so K <= 244 keeps it inside the /24. */
export const MAX_HOSTS = 244;
export const MAX_SUBNET_INDEX = 511;
const CLUSTER_NAME_PATTERN = /^[a-z][a-z0-9]{0,10}$/;

/** Defaults for everything but the commands, which the caller must supply. */
export function defaultDevClusterOptions(): Omit<DevClusterOptions, 'coordinatorCommand' | 'agentCommand' | 'waitUntilReady'> {
  return {
    name: DEFAULT_CLUSTER_NAME,
    hosts: 2,
    subnetIndex: 0,
    natsPort: DEFAULT_NATS_PORT,
    redisPort: DEFAULT_REDIS_PORT,
    natsListenOnAllAddresses: true,
    readyTimeoutMs: DEFAULT_READY_TIMEOUT_MS,
    stopGraceMs: DEFAULT_STOP_GRACE_MS,
    cwd: process.cwd(),
    logger: silentLogger,
    agentHosts: null,
    hostSshd: false,
    natsAuth: true,
    natsTls: true,
  };
}

/** Input of `startDevCluster`: the commands are required, everything else defaults. */
export type DevClusterInput = Partial<DevClusterOptions> &
  Pick<DevClusterOptions, 'coordinatorCommand' | 'agentCommand' | 'waitUntilReady'>;

/** Validates a cluster name; used by every entry point that takes one. */
export function assertClusterName(name: string): void {
  if (!CLUSTER_NAME_PATTERN.test(name)) {
    throw new FerryError(
      ErrorCode.INVALID_ARGUMENT,
      `invalid dev cluster name '${name}': use 1-11 characters [a-z0-9], starting with a letter`,
    );
  }
}

function assertIntegerInRange(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer in ${min}..${max}, got ${value}`);
  }
}

/** Fills defaults and validates once, so the rest of the code trusts its options. */
export function compileDevClusterOptions(input: DevClusterInput): DevClusterOptions {
  const options: DevClusterOptions = {
    ...defaultDevClusterOptions(),
    ...stripUndefined(input),
    // TLS follows auth unless asked for explicitly: anonymous NATS has no credentials file to name the CA.
    natsTls: input.natsTls ?? input.natsAuth ?? true,
    coordinatorCommand: input.coordinatorCommand,
    agentCommand: input.agentCommand,
    waitUntilReady: input.waitUntilReady,
  };
  for (const required of ['coordinatorCommand', 'agentCommand', 'waitUntilReady'] as const) {
    if (typeof options[required] !== 'function') {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `dev cluster option ${required} must be a function`);
    }
  }
  assertClusterName(options.name);
  assertIntegerInRange('hosts', options.hosts, 1, MAX_HOSTS);
  assertIntegerInRange('subnetIndex', options.subnetIndex, 0, MAX_SUBNET_INDEX);
  assertIntegerInRange('natsPort', options.natsPort, 1, 65535);
  assertIntegerInRange('redisPort', options.redisPort, 1, 65535);
  if (options.natsPort === options.redisPort) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `natsPort and redisPort are both ${options.natsPort}`);
  }
  assertIntegerInRange('readyTimeoutMs', options.readyTimeoutMs, 1, 3_600_000);
  assertIntegerInRange('stopGraceMs', options.stopGraceMs, 0, 600_000);
  if (options.natsTls && !options.natsAuth) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'natsTls needs natsAuth: clients learn the CA from their credentials files');
  }
  if (options.agentHosts !== null) {
    const unknown = options.agentHosts.filter((h) => !/^h\d+$/.test(h) || Number(h.slice(1)) < 1 || Number(h.slice(1)) > options.hosts);
    if (unknown.length > 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `agentHosts names hosts the cluster does not have: ${unknown.join(', ')}`);
  }
  return options;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
