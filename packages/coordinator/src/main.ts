/** ferry-coordinator: configuration from the environment, everything else in startCoordinator(). */
import pino from 'pino';
import { loadKafkaCredentials, loadKafkaRequestKeys, toFerryError, type RestoreMode } from '@ferry/protocol';
import { startCoordinator } from './start-coordinator';
import { loadFilesystemsFile } from './filesystems';

async function main(): Promise<void> {
  const env = process.env;
  const logger = pino({ name: 'ferry-coordinator', level: env.FERRY_LOG_LEVEL ?? 'info' });
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const running = await startCoordinator(
    {
      natsUrl: env.FERRY_NATS_URL,
      natsCredentialsFile: env.FERRY_NATS_CREDENTIALS || undefined,
      filesystems: env.FERRY_FILESYSTEMS ? loadFilesystemsFile(env.FERRY_FILESYSTEMS) : undefined,
      redisUrl: env.FERRY_REDIS_URL,
      redisKeyPrefix: env.FERRY_REDIS_PREFIX,
      hostLostAfterMs: num(env.FERRY_HOST_LOST_AFTER_MS),
      transferIdleTimeoutMs: num(env.FERRY_TRANSFER_IDLE_TIMEOUT_MS),
      maxMigrationsPerSource: num(env.FERRY_MAX_MIGRATIONS_PER_SOURCE),
      maxMigrationsPerTarget: num(env.FERRY_MAX_MIGRATIONS_PER_TARGET),
      leaseTtlMs: num(env.FERRY_LEASE_TTL_MS),
      coordinatorId: env.FERRY_COORDINATOR_ID || undefined,
      defaultRestore: (env.FERRY_DEFAULT_RESTORE || undefined) as RestoreMode | undefined,
    },
    logger,
    {
      httpAddress: env.FERRY_HTTP_ADDRESS || undefined,
      // "off" serves no HTTP at all; 0 takes any free port.
      httpPort: env.FERRY_HTTP_PORT === 'off' ? null : num(env.FERRY_HTTP_PORT),
      httpTokensFile: env.FERRY_HTTP_TOKENS || undefined,
      kafkaBrokers: env.FERRY_KAFKA_BROKERS ? env.FERRY_KAFKA_BROKERS.split(',').map((b) => b.trim()).filter(Boolean) : undefined,
      kafkaEventsTopic: env.FERRY_KAFKA_EVENTS_TOPIC || undefined,
      kafkaRequestsTopic: env.FERRY_KAFKA_REQUESTS_TOPIC || undefined,
      // TLS with a CA file, or with the system's CAs (FERRY_KAFKA_TLS=on); SASL from a 0600 file.
      kafkaTls: env.FERRY_KAFKA_TLS_CA_FILE ? { caFile: env.FERRY_KAFKA_TLS_CA_FILE } : env.FERRY_KAFKA_TLS === 'on' ? { caFile: null } : undefined,
      kafkaSasl: env.FERRY_KAFKA_CREDENTIALS ? loadKafkaCredentials(env.FERRY_KAFKA_CREDENTIALS) : undefined,
      kafkaRequestKeys: env.FERRY_KAFKA_REQUEST_KEYS ? loadKafkaRequestKeys(env.FERRY_KAFKA_REQUEST_KEYS) : undefined,
      recentEventsLimit: num(env.FERRY_EVENTS_LIMIT),
    },
  );
  logger.info('coordinator ready');
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'stopping');
    void running.stop().finally(() => process.exit(0));
  };
  // Rotation: the tokens file is re-read when it changes; SIGHUP makes it happen at once.
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reading the HTTP tokens file again');
    running.observability.reloadHttpTokens();
  });
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  const fe = toFerryError(err);
  process.stderr.write(`ferry-coordinator: ${fe.code}: ${fe.message}\n`);
  process.exit(1);
});
