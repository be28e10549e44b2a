import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { ClusterLayout, DEV_STATE_ROOT, clusterStateDir } from './cluster-layout';
import { assertClusterName } from './dev-cluster-options';
import type { DevNatsCredentialFiles } from './nats-security';
import { ProcessIdentity } from './process-identity';

/** Which part of the cluster a recorded process is. */
export type DevProcessRole = 'nats' | 'redis' | 'sshd' | 'coordinator' | 'agent';

/** A process the cluster started, identified by pid + start time so a reused pid is never signalled. */
export interface DevProcessRecord extends ProcessIdentity {
  role: DevProcessRole;
  /** Set for agents. */
  host?: string;
  argv: string[];
  logPath: string;
}

/** What `ferry dev up` made, written as it goes so a crashed `up` can still be torn down. */
export interface DevClusterState {
  formatVersion: 1;
  name: string;
  /** 'starting' until waitUntilReady resolved. */
  status: 'starting' | 'running';
  createdAt: string;
  /** The process running `up`; while it lives and status is 'starting', another `up` must not interfere. */
  startedBy: ProcessIdentity;
  layout: ClusterLayout;
  natsPort: number;
  redisPort: number;
  /** NATS from the root namespaces (127.0.0.1, or the bridge address if nats listens only there). */
  natsUrl: string;
  /** NATS from inside hosts. */
  hostNatsUrl: string;
  redisUrl: string;
  hostRedisUrl: string;
  /** Each role's NATS credentials file; absent or null: NATS without authentication. */
  credentials?: DevNatsCredentialFiles | null;
  /** The CA clients trust when nats-server requires TLS; absent or null: plain TCP. */
  tlsCaFile?: string | null;
  /** The coordinator's HTTP API: its URL and token files (see ../dev-http-tokens.ts); absent: none recorded. */
  http?: { url: string | null; tokensFile: string; viewerTokenFile: string; operatorTokenFile: string } | null;
  /** The Kafka broker (`--kafka`): its address and clients' CA, credentials and request-key files; absent or null: none. */
  kafka?: { brokers: string; security: { dir: string; caFile: string; credentials: Record<'admin' | 'coordinator' | 'autoscaler', string>; requestKeys: string; autoscalerRequestKey: string } | null } | null;
  /** The namespace directory is bind-mounted onto itself (needs unmounting). */
  namespaceDirMounted: boolean;
  bridgeCreated: boolean;
  /** Hosts whose netns/veth/mount/UTS namespaces were (at least partly) created. */
  hostsCreated: string[];
  processes: DevProcessRecord[];
}

const STATE_FILE_NAME = 'cluster.json';

/** The state of a dev cluster, or null when none is recorded. */
export function readClusterState(name: string): DevClusterState | null {
  assertClusterName(name);
  const file = path.join(clusterStateDir(name), STATE_FILE_NAME);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FerryError(ErrorCode.INTERNAL, `cannot read ${file}`, { cause: err });
  }
  try {
    const state = JSON.parse(text) as DevClusterState;
    if (state.formatVersion !== 1 || state.name !== name) throw new Error('unexpected format');
    return state;
  } catch (err) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `corrupt dev cluster state file ${file}; remove it by hand`, {
      cause: err,
    });
  }
}

/** Writes the state file atomically (rename), so a crash never leaves half a file. */
export function writeClusterState(state: DevClusterState): void {
  const file = state.layout.stateFile;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(temporary, file);
}

/** Names of all clusters that have a state directory. */
export function listDevClusters(): string[] {
  try {
    return fs
      .readdirSync(DEV_STATE_ROOT, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new FerryError(ErrorCode.INTERNAL, 'cannot list dev clusters', { cause: err });
  }
}
