/**
 * The dev cluster's SSH path: installs a host's agent through the sshd running in that host
 * (`ferry dev up --ssh`), exactly as `ferry hosts add` does for a real host. Hosts share the
 * machine's filesystem, so each gets its own install directory under the cluster's state dir.
 * It lives with the CLI, whose bootstrap it drives; @ferry/dev-cluster knows nothing of SSH installs.
 */
import { join } from 'node:path';
import { agentWorkDir, clusterDataDir, dev } from '@ferry/dev-cluster';
import { bootstrapAgent, findBundleRoot, type BootstrapResult } from './bootstrap';
import { waitForHosts } from './client';

/** The install prefix (and config dir) of a host's bootstrapped agent in a dev cluster. */
export function devBootstrapPrefix(state: dev.DevClusterState, host: string): string {
  return join(state.layout.stateDir, 'bootstrap', host);
}

/** Where the dev cluster's `hosts add` records live (removed with the cluster). */
export function devBootstrapStateDir(state: dev.DevClusterState): string {
  return join(state.layout.stateDir, 'bootstrap', 'records');
}

export interface DevBootstrapOptions {
  /** FERRY_DATA_DIR and FERRY_WORK_DIR of the agent, as a dev-started agent gets them. */
  dataDir: string;
  workDir: string;
  extraEnv?: Record<string, string>;
  registerTimeoutMs?: number;
  /** Resolves once the host registered; the caller knows how to ask its coordinator. */
  waitUntilRegistered: (name: string, timeoutMs: number) => Promise<void>;
}

/** Bootstraps the agent of one dev host over SSH (as root, host key checked against the cluster's known_hosts). */
export function bootstrapDevHost(state: dev.DevClusterState, hostName: string, options: DevBootstrapOptions): Promise<BootstrapResult> {
  const host = state.layout.hosts.find((h) => h.name === hostName);
  if (host === undefined) throw new Error(`dev cluster '${state.name}' has no host ${hostName}`);
  const ssh = dev.hostSshFiles(state.layout);
  const prefix = devBootstrapPrefix(state, hostName);
  return bootstrapAgent({
    name: hostName,
    ssh: { user: 'root', host: host.address, port: 22 },
    privateKeyFile: ssh.clientKey,
    hostKey: { kind: 'known-hosts', file: ssh.knownHosts },
    natsUrl: state.hostNatsUrl,
    address: host.address,
    prefix,
    configDir: prefix,
    dataDir: options.dataDir,
    workDir: options.workDir,
    extraEnv: options.extraEnv ?? {},
    // systemd, if the machine ran it, would start the agent in the root namespaces, not in the host.
    serviceManager: 'process',
    repoRoot: findBundleRoot(__dirname),
    stateDir: devBootstrapStateDir(state),
    registerTimeoutMs: options.registerTimeoutMs,
    waitUntilRegistered: options.waitUntilRegistered,
  });
}

/** `dev up --ssh`: every host's agent installed through its sshd, one host after another. */
export async function bootstrapDevHosts(state: dev.DevClusterState): Promise<void> {
  const cliCredentials = state.credentials?.cli ?? null;
  for (const host of state.layout.hosts) {
    const agentCredentials = state.credentials?.agents[host.name];
    await bootstrapDevHost(state, host.name, {
      dataDir: clusterDataDir(state.name),
      workDir: agentWorkDir(state.name, host.name),
      extraEnv: agentCredentials === undefined ? {} : { FERRY_NATS_CREDENTIALS: agentCredentials },
      waitUntilRegistered: (h, timeoutMs) => waitForHosts(state.natsUrl, [h], timeoutMs, cliCredentials),
    });
  }
}
