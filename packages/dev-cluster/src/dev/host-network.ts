import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { ClusterLayout, HostLayout, NETNS_DIR, allHosts, subnetBase } from './cluster-layout';
import { runCommand } from './run-command';

/** True if a network interface of that name exists in the root network namespace. */
export function linkExists(name: string): boolean {
  return fs.existsSync(path.join('/sys/class/net', name));
}

/** True if `ip netns` knows a namespace of that name. */
export function netnsExists(name: string): boolean {
  return fs.existsSync(path.join(NETNS_DIR, name));
}

/** Root-namespace IPv4 addresses inside the cluster's /24 (a second cluster on the same subnet would clash). */
export async function addressesInSubnet(subnetIndex: number): Promise<string[]> {
  const { stdout } = await runCommand('ip', ['-j', '-4', 'addr', 'show']);
  const interfaces = JSON.parse(stdout) as Array<{ ifname: string; addr_info?: Array<{ local: string }> }>;
  const prefix = `${subnetBase(subnetIndex)}.`;
  return interfaces.flatMap((iface) =>
    (iface.addr_info ?? []).filter((a) => a.local.startsWith(prefix)).map((a) => `${a.local} (${iface.ifname})`),
  );
}

/** Creates the cluster bridge with the .1 address. No route or NAT anywhere else: hosts only see the bridge. */
export async function createBridge(layout: ClusterLayout): Promise<void> {
  await runCommand('ip', ['link', 'add', layout.bridge, 'type', 'bridge']);
  await runCommand('ip', ['addr', 'add', `${layout.bridgeAddress}/${layout.prefixLength}`, 'dev', layout.bridge]);
  await runCommand('ip', ['link', 'set', layout.bridge, 'up']);
}

/** Creates a host's network namespace, its veth to the bridge (eth0 inside) and brings lo up. */
export async function createHostNetwork(layout: ClusterLayout, host: HostLayout): Promise<void> {
  await runCommand('ip', ['netns', 'add', host.netns]);
  // CRIU connects a socket at start-up ("kerndat_tcp_repair failed ... Network is unreachable" without lo).
  await runCommand('ip', ['-n', host.netns, 'link', 'set', 'lo', 'up']);
  await runCommand('ip', ['link', 'add', host.vethRoot, 'type', 'veth', 'peer', 'name', host.vethPeer, 'netns', host.netns]);
  await runCommand('ip', ['-n', host.netns, 'link', 'set', host.vethPeer, 'name', 'eth0']);
  await runCommand('ip', ['-n', host.netns, 'addr', 'add', `${host.address}/${layout.prefixLength}`, 'dev', 'eth0']);
  await runCommand('ip', ['-n', host.netns, 'link', 'set', 'eth0', 'up']);
  await runCommand('ip', ['link', 'set', host.vethRoot, 'master', layout.bridge, 'up']);
}

/** Removes a host's network namespace and veth; no-op for what is already gone. */
export async function deleteHostNetwork(host: HostLayout): Promise<void> {
  if (netnsExists(host.netns)) await runCommand('ip', ['netns', 'delete', host.netns]);
  // Deleting the namespace destroys the pair only once nothing holds the namespace; be explicit.
  if (linkExists(host.vethRoot)) await deleteLinkIfPresent(host.vethRoot);
  if (linkExists(host.vethPeer)) await deleteLinkIfPresent(host.vethPeer);
}

/** Deletes a root-namespace link; tolerates it vanishing concurrently. */
export async function deleteLinkIfPresent(name: string): Promise<void> {
  try {
    await runCommand('ip', ['link', 'delete', name]);
  } catch (err) {
    if (linkExists(name)) throw err;
  }
}

/** Refuses to build over someone else's namespaces, links or addresses. */
export async function assertNetworkFree(layout: ClusterLayout): Promise<void> {
  const clashes: string[] = [];
  if (linkExists(layout.bridge)) clashes.push(`link ${layout.bridge}`);
  for (const host of allHosts(layout)) {
    if (netnsExists(host.netns)) clashes.push(`netns ${host.netns}`);
    if (linkExists(host.vethRoot)) clashes.push(`link ${host.vethRoot}`);
    if (linkExists(host.vethPeer)) clashes.push(`link ${host.vethPeer}`);
  }
  clashes.push(...(await addressesInSubnet(layout.subnetIndex)).map((a) => `address ${a}`));
  if (clashes.length > 0) {
    throw new FerryError(
      ErrorCode.CONFLICT,
      `dev cluster '${layout.name}' cannot use subnet ${layout.subnetCidr}: already in use: ${clashes.join(', ')}` +
        ` (another cluster? run \`ferry dev down\` for it, or pick another subnet index)`,
    );
  }
}

/** Removes the cluster bridge; no-op if it is gone. */
export async function deleteBridge(layout: ClusterLayout): Promise<void> {
  if (linkExists(layout.bridge)) await deleteLinkIfPresent(layout.bridge);
}
