/**
 * A whole ferry cluster on one machine, for `ferry dev`, the integration tests and the benchmarks:
 * nats-server, redis-server, the coordinator and one agent per "host" (network + mount + UTS
 * namespaces on a bridge), and a single-node Kafka broker. Not a production setup.
 */
export { startLocalCluster, stopLocalCluster, clusterDataDir, kafkaDataDir, agentWorkDir } from './local-cluster';
export type { LocalClusterOptions, LocalAgentOptions } from './local-cluster';
export { startLocalHost } from './local-host';
export type { LocalHostOptions } from './local-host';
export { waitForHosts } from './wait-for-hosts';
export { devHttpAuthDir, devHttpTokenFiles, readDevHttpToken } from './dev-http-tokens';
export type { DevHttpAccess } from './dev-http-tokens';
export { startKafkaBroker, stopKafkaBroker, defaultKafkaBrokerOptions, DEFAULT_KAFKA_LIBS_DIR } from './kafka-broker';
export type { KafkaBrokerOptions, RunningKafkaBroker } from './kafka-broker';
export * as dev from './dev';
