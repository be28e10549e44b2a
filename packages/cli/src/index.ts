/** The CLI as a library: what tests and the benchmark use to drive a local cluster in-process. */
export { startLocalCluster, stopLocalCluster, waitForHosts, clusterDataDir } from './dev-cluster';
export type { LocalClusterOptions } from './dev-cluster';
export { resolveNatsUrl, connectCluster } from './client';
export { publicResult } from './commands/migrate';
export * as dev from './dev';
