/** The CLI as a library: what tests and the benchmark use to drive a local cluster in-process. */
export { startLocalCluster, stopLocalCluster, waitForHosts, clusterDataDir, kafkaDataDir } from './dev-cluster';
export { startKafkaBroker, stopKafkaBroker, defaultKafkaBrokerOptions, DEFAULT_KAFKA_LIBS_DIR } from './kafka-broker';
export type { KafkaBrokerOptions, RunningKafkaBroker } from './kafka-broker';
export type { LocalClusterOptions } from './dev-cluster';
export { resolveNatsUrl, connectCluster } from './client';
export { publicResult } from './commands/migrate';
export * as dev from './dev';
export * as bootstrap from './bootstrap';
