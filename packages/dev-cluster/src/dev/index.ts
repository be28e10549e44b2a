/**
 * The local dev cluster: nats-server, redis-server, a coordinator and N agents, each agent in its
 * own "host" (network + mount + UTS namespaces on a bridge in 198.18.0.0/15). Used by
 * `ferry dev up|down|kill|start` (through ../local-cluster) and by integration tests in-process.
 */
export {
  DEFAULT_CLUSTER_NAME,
  DEFAULT_NATS_PORT,
  DEFAULT_REDIS_PORT,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_STOP_GRACE_MS,
  MAX_HOSTS,
  defaultDevClusterOptions,
  compileDevClusterOptions,
} from './dev-cluster-options';
export type {
  DevClusterOptions,
  DevClusterInput,
  DevProcessCommand,
  DevCoordinatorContext,
  DevHostContext,
} from './dev-cluster-options';
export { clusterLayout, allHosts, DEV_STATE_ROOT, DEV_NAMESPACE_ROOT, STORAGE_HOST_NAME } from './cluster-layout';
export type { DevFilesystem } from './storage-host';
export { hostSshFiles } from './host-sshd';
export type { HostSshFiles } from './host-sshd';
export type { ClusterLayout, HostLayout } from './cluster-layout';
export { readClusterState, writeClusterState, listDevClusters } from './cluster-state';
export type { DevClusterState, DevProcessRecord, DevProcessRole } from './cluster-state';
export { startDevCluster, devHostContexts } from './start-dev-cluster';
export { stopDevCluster } from './stop-dev-cluster';
export type { StopDevClusterOptions } from './stop-dev-cluster';
export { killHost, restartAgent } from './host-agent';
export { HOST_LOCAL_DISK } from './host-namespaces';
export { startProcessInHost, hostExec, hostEnterArgv, withStdioOpenedInside } from './host-process';
export type { HostProcessOptions, HostExecOptions } from './host-process';
export type { SpawnedProcess } from './spawn-logged';
export type { CommandResult } from './run-command';
export { isProcessAlive } from './process-identity';
export type { ProcessIdentity } from './process-identity';
