import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError, silentLogger, type Logger } from '@ferry/protocol';
import { ClusterLayout, NETNS_DIR, allHosts, clusterNamespaceDir, clusterStateDir } from './cluster-layout';
import { DevClusterState, DevProcessRole, readClusterState } from './cluster-state';
import { DEFAULT_STOP_GRACE_MS, assertClusterName } from './dev-cluster-options';
import { deleteBridge, deleteHostNetwork } from './host-network';
import { deleteHostMountAndUts, deleteNamespaceDir } from './host-namespaces';
import { unmountAll } from './mounts';
import { namespaceInode, stopProcessesInNamespaces } from './namespace-processes';
import { ProcessIdentity, terminateProcesses } from './process-identity';

export interface StopDevClusterOptions {
  /** Between SIGTERM and SIGKILL. */
  graceMs?: number;
  logger?: Logger;
}

/**
 * Tears a dev cluster down completely: its processes (by recorded pid + start time), every other
 * process living in its hosts (workloads restored by CRIU are nobody's child), the hosts' mount/UTS
 * bind files, network namespaces, veths, the bridge, the namespace directory and the state
 * directory. Idempotent: what is already gone is skipped; no cluster at all is not an error.
 * Every step runs even if an earlier one failed; if any failed, the state directory is kept (so
 * a second `stop` can finish) and a FerryError lists what is left.
 */
export async function stopDevCluster(name: string, options: StopDevClusterOptions = {}): Promise<void> {
  assertClusterName(name);
  const graceMs = options.graceMs ?? DEFAULT_STOP_GRACE_MS;
  const log = (options.logger ?? silentLogger).child({ cluster: name });
  const state = readClusterState(name);
  const failures: string[] = [];
  const step = async (what: string, action: () => Promise<unknown>) => {
    try {
      await action();
    } catch (err) {
      log.error({ err }, `teardown step failed: ${what}`);
      failures.push(`${what}: ${(err as Error).message}`);
    }
  };

  if (state === null) {
    // Nothing recorded: only leftovers whose names follow from the cluster name can be ours.
    await step('namespace directory', () => removeNamespaceDirLeftovers(name));
  } else {
    log.info({ hosts: state.layout.hosts.length }, 'stopping dev cluster');
    const { layout } = state;
    const stopRoles = (roles: DevProcessRole[]) => async () => {
      const survivors = await terminateProcesses(processesWithRoles(state, roles), graceMs);
      assertNoSurvivors(survivors);
    };
    await step('coordinator and agents', stopRoles(['coordinator', 'agent']));
    // sshfs mounts inside hosts talk to sshd; stop the hosts' processes (sshfs included) before it.
    await step('processes inside hosts', async () => {
      assertNoSurvivors(await stopProcessesInNamespaces(hostNamespaceInodes(layout), graceMs));
    });
    await step('nats-server, redis-server and sshd', stopRoles(['nats', 'redis', 'sshd']));
    for (const host of allHosts(layout)) {
      await step(`host ${host.name} mount/UTS namespaces`, () => deleteHostMountAndUts(host));
      await step(`host ${host.name} network`, () => deleteHostNetwork(host));
    }
    await step(`bridge ${layout.bridge}`, () => deleteBridge(layout));
    await step('namespace directory', () => deleteNamespaceDir(layout));
  }

  if (failures.length > 0) {
    throw new FerryError(ErrorCode.INTERNAL, `dev cluster '${name}' teardown incomplete; run it again or clean up by hand`, {
      details: failures,
    });
  }
  fs.rmSync(clusterStateDir(name), { recursive: true, force: true });
  log.info({}, 'dev cluster stopped');
}

function processesWithRoles(state: DevClusterState, roles: DevProcessRole[]): ProcessIdentity[] {
  return state.processes.filter((p) => roles.includes(p.role));
}

function assertNoSurvivors(survivors: ProcessIdentity[]): void {
  if (survivors.length > 0) {
    throw new FerryError(ErrorCode.INTERNAL, `processes survived SIGKILL: ${survivors.map((p) => p.pid).join(', ')}`);
  }
}

/** Inodes of every host namespace that still has a bind file. */
function hostNamespaceInodes(layout: ClusterLayout): Set<number> {
  const inodes = new Set<number>();
  for (const host of allHosts(layout)) {
    for (const file of [path.join(NETNS_DIR, host.netns), host.mountNsFile, host.utsNsFile]) {
      const inode = namespaceInode(file);
      // A bind file that was never mounted over is a plain file on the root filesystem, not a namespace.
      if (inode !== null && isNamespaceFile(file)) inodes.add(inode);
    }
  }
  return inodes;
}

function isNamespaceFile(file: string): boolean {
  // nsfs reports its files with st_dev of the nsfs mount; compare against our own net namespace's.
  try {
    return fs.statSync(file).dev === fs.statSync('/proc/self/ns/net').dev;
  } catch {
    return false;
  }
}

async function removeNamespaceDirLeftovers(name: string): Promise<void> {
  const dir = clusterNamespaceDir(name);
  if (!fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir)) {
    if (/^(h\d+|storage)\.(mnt|uts)$/.test(entry)) await unmountAll(path.join(dir, entry));
  }
  await unmountAll(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}
