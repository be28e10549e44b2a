import * as path from 'node:path';
import { DEFAULT_CLUSTER_NAME } from './dev-cluster-options';

/** Where dev clusters keep their state file, configs and logs: one directory per cluster. */
export const DEV_STATE_ROOT = '/run/ferry/dev';
/** Where the mount/UTS namespace bind files live: one privately mounted directory per cluster. */
export const DEV_NAMESPACE_ROOT = '/run/ferry/ns';
/** `ip netns add` puts its bind files here. */
export const NETNS_DIR = '/run/netns';
const SUBNET_PREFIX_LENGTH = 24;
/** The storage host's name (and UTS hostname); agent hosts are h1..hN. */
export const STORAGE_HOST_NAME = 'storage';

/** One host's names and address. Every field is derived from the cluster name and indexes. */
export interface HostLayout {
  /** `h1`... (also the UTS hostname). */
  name: string;
  /** 1-based. */
  index: number;
  /** Network namespace name for `ip netns`. */
  netns: string;
  /** IPv4 address of eth0 inside the host. */
  address: string;
  /** Root-namespace end of the veth pair, enslaved to the bridge. */
  vethRoot: string;
  /** The other end's name until it is moved into the host and renamed eth0. */
  vethPeer: string;
  /** Bind file holding the host's mount namespace. */
  mountNsFile: string;
  /** Bind file holding the host's UTS namespace. */
  utsNsFile: string;
}

/** Every name and address a cluster uses, computed up front so teardown can find them again. */
export interface ClusterLayout {
  name: string;
  subnetIndex: number;
  /** e.g. 198.18.0.0/24 */
  subnetCidr: string;
  prefixLength: number;
  bridge: string;
  bridgeAddress: string;
  stateDir: string;
  logDir: string;
  stateFile: string;
  namespaceDir: string;
  hosts: HostLayout[];
  /** The storage host: runs sshd exporting `sharedDir`, the `shared` filesystem agents mount with sshfs. */
  storage: HostLayout;
  /** Directory the storage host exports (on the machine's filesystem, like a file server's disk). */
  sharedDir: string;
  /** ssh keys, sshd config and known_hosts of the storage host. */
  sshDir: string;
}

/** Every namespace host of a cluster: the agent hosts and the storage host. */
export function allHosts(layout: ClusterLayout): HostLayout[] {
  return [...layout.hosts, layout.storage];
}

/** The network namespace name prefix: none for the default cluster, `<name>-` for others. */
export function netnsPrefix(clusterName: string): string {
  return clusterName === DEFAULT_CLUSTER_NAME ? '' : `${clusterName}-`;
}

/** The bridge name: `ferry0` for the default cluster, `fbr-<name>` for others (<= 15 chars, IFNAMSIZ). */
export function bridgeName(clusterName: string): string {
  return clusterName === DEFAULT_CLUSTER_NAME ? 'ferry0' : `fbr-${clusterName}`;
}

/** The state directory of a cluster, whether or not it exists. */
export function clusterStateDir(clusterName: string): string {
  return path.join(DEV_STATE_ROOT, clusterName);
}

/** The namespace bind-file directory of a cluster, whether or not it exists. */
export function clusterNamespaceDir(clusterName: string): string {
  return path.join(DEV_NAMESPACE_ROOT, clusterName);
}

/** First three octets of the /24 a subnet index selects, inside 198.18.0.0/15 and nowhere else. */
export function subnetBase(subnetIndex: number): string {
  return `198.${18 + Math.floor(subnetIndex / 256)}.${subnetIndex % 256}`;
}

/** Computes every name and address of a cluster. Pure. */
export function clusterLayout(clusterName: string, hostCount: number, subnetIndex: number): ClusterLayout {
  const base = subnetBase(subnetIndex);
  const stateDir = clusterStateDir(clusterName);
  const namespaceDir = clusterNamespaceDir(clusterName);
  const hosts: HostLayout[] = [];
  for (let index = 1; index <= hostCount; index++) {
    const name = `h${index}`;
    hosts.push({
      name,
      index,
      netns: `${netnsPrefix(clusterName)}${name}`,
      address: `${base}.${10 + index}`,
      // Keyed by subnet index, not cluster name, so they stay short; two clusters cannot share a subnet anyway.
      vethRoot: `fv${subnetIndex}-${index}`,
      vethPeer: `fp${subnetIndex}-${index}`,
      mountNsFile: path.join(namespaceDir, `${name}.mnt`),
      utsNsFile: path.join(namespaceDir, `${name}.uts`),
    });
  }
  return {
    name: clusterName,
    subnetIndex,
    subnetCidr: `${base}.0/${SUBNET_PREFIX_LENGTH}`,
    prefixLength: SUBNET_PREFIX_LENGTH,
    bridge: bridgeName(clusterName),
    bridgeAddress: `${base}.1`,
    stateDir,
    logDir: path.join(stateDir, 'logs'),
    stateFile: path.join(stateDir, 'cluster.json'),
    namespaceDir,
    hosts,
    storage: {
      name: STORAGE_HOST_NAME,
      index: 0,
      netns: `${netnsPrefix(clusterName)}${STORAGE_HOST_NAME}`,
      address: `${base}.2`,
      vethRoot: `fv${subnetIndex}-s`,
      vethPeer: `fp${subnetIndex}-s`,
      mountNsFile: path.join(namespaceDir, `${STORAGE_HOST_NAME}.mnt`),
      utsNsFile: path.join(namespaceDir, `${STORAGE_HOST_NAME}.uts`),
    },
    sharedDir: path.join(stateDir, 'shared'),
    sshDir: path.join(stateDir, 'ssh'),
  };
}
