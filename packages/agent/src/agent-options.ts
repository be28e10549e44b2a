import { ErrorCode, FerryError, isValidToken, LocalDir } from '@ferry/protocol';
import type { AgentFaults } from './fault-injection';
import { DEFAULT_AGENT_METRICS_PORT } from './agent-metrics';
import { DEFAULT_CRIU_PATH } from './criu/criu-driver';
import { DEFAULT_LOCAL_DIR_ROOTS } from './host/local-dirs';

/** Heartbeats let the coordinator tell a live host from a lost one within a few seconds. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1_000;
/** Images are held in memory (tmpfs); this caps one image. */
export const DEFAULT_MAX_IMAGE_BYTES = 16 * 1024 ** 3;
/** Memory pre-copy's threshold (AgentOptions.precopyMinBytes). */
export const DEFAULT_PRECOPY_MIN_BYTES = 32 * 1024 ** 2;

export interface AgentOptions {
  /** This host's name in the cluster (a subject token). */
  host: string;
  /** Address other hosts reach this one at (informational, shown by `ferry hosts`). */
  address: string;
  /** NATS server URL(s). */
  natsUrl: string;
  /** This agent's NATS credentials file (see @ferry/protocol nats-credentials.ts); null: anonymous. */
  natsCredentialsFile: string | null;
  /**
   * Where the agent keeps its inventory (agents/<host>/) and workload logs (workloads/<name>/).
   * Log paths do not name the host, so a restored workload finds its log at the same path.
   */
  dataDir: string;
  /** tmpfs root for per-migration work dirs. */
  workDir: string;
  /** Size limit of the work-dir tmpfs. */
  workDirBytes: number;
  heartbeatIntervalMs: number;
  /** Largest image (all files together) the agent will receive. */
  maxImageBytes: number;
  /** CRIU binary. */
  criuPath: string;
  /** Largest unlinked-but-open file CRIU copies into the image (its --ghost-limit). */
  ghostLimitBytes: number;
  /** Port of the agent's /metrics endpoint on its address (null: none). */
  metricsPort: number | null;
  /**
   * Post-copy by CRIU's own lazy dump where the probe allows it (CriuInfo.lazyDump); false: always
   * the rewritten full dump (FERRY_LAZY_DUMP=off), e.g. to compare the two.
   */
  lazyDump: boolean;
  /**
   * ferry's page tunnel where the probe allows it (CriuInfo.pageTunnel); false (FERRY_PAGE_TUNNEL=off):
   * this host takes CRIU's TLS page server or ferry's stream instead, e.g. to compare them.
   */
  pageTunnel: boolean;
  /**
   * Streamed dumps where the probe allows it (CriuInfo.stream); false (FERRY_STREAM_DUMP=off): this
   * host dumps to its work dir (or the page tunnel) instead, e.g. to compare them.
   */
  streamDump: boolean;
  /**
   * Memory pre-copy where both hosts can (CriuInfo.memoryPrecopy); false (FERRY_PRECOPY=off): this
   * host neither pre-copies nor takes pre-copied memory, e.g. to compare.
   */
  memoryPrecopy: boolean;
  /**
   * Pre-copy only a workload with at least this much private memory present (FERRY_PRECOPY_MIN_MIB):
   * below it the extra pass costs more than the few milliseconds of downtime it saves.
   */
  precopyMinBytes: number;
  /** Where workloads' local dirs may be (FERRY_LOCAL_DIR_ROOTS, comma-separated; host/local-dirs.ts). */
  localDirRoots: string[];
  /** Faults to inject, for failure tests only. */
  faults: AgentFaults;
}

export function defaultAgentOptions(host = 'h1'): AgentOptions {
  return {
    host,
    address: '',
    natsUrl: 'nats://127.0.0.1:4222',
    natsCredentialsFile: null,
    dataDir: '/var/lib/ferry',
    workDir: `/run/ferry/work/${host}`,
    workDirBytes: DEFAULT_MAX_IMAGE_BYTES,
    heartbeatIntervalMs: DEFAULT_HEARTBEAT_INTERVAL_MS,
    maxImageBytes: DEFAULT_MAX_IMAGE_BYTES,
    criuPath: DEFAULT_CRIU_PATH,
    ghostLimitBytes: 64 * 1024 * 1024,
    lazyDump: true,
    pageTunnel: true,
    streamDump: true,
    memoryPrecopy: true,
    precopyMinBytes: DEFAULT_PRECOPY_MIN_BYTES,
    localDirRoots: DEFAULT_LOCAL_DIR_ROOTS,
    faults: {},
    metricsPort: DEFAULT_AGENT_METRICS_PORT,
  };
}

/** Resolves defaults and validates once, so the rest of the agent can trust its options. */
export function compileAgentOptions(partial: Partial<AgentOptions> & { host: string }): AgentOptions {
  const o = { ...defaultAgentOptions(partial.host), ...stripUndefined(partial) };
  if (!isValidToken(o.host)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid host name ${JSON.stringify(o.host)}`);
  for (const root of o.localDirRoots) {
    if (!LocalDir.safeParse(root).success) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `local dir root ${JSON.stringify(root)} must be an absolute, normalized path other than /`);
  }
  for (const k of ['dataDir', 'workDir'] as const) {
    if (!o[k].startsWith('/')) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${k} must be an absolute path`);
  }
  if (!Number.isSafeInteger(o.precopyMinBytes) || o.precopyMinBytes < 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'precopyMinBytes must be a non-negative integer');
  for (const k of ['heartbeatIntervalMs', 'maxImageBytes', 'workDirBytes', 'ghostLimitBytes'] as const) {
    if (!Number.isFinite(o[k]) || o[k] <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${k} must be a positive number`);
  }
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
