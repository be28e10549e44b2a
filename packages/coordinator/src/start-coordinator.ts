import { connect } from 'nats';
import { Redis } from 'ioredis';
import { natsAuthOptionsFromFile, silentLogger, type Logger } from '@ferry/protocol';
import { Coordinator } from './coordinator';
import { compileCoordinatorOptions, type CoordinatorOptions } from './coordinator-options';
import { compileObservabilityOptions, startObservability, type ObservabilityOptions, type RunningObservability } from './observability';

export interface RunningCoordinator {
  coordinator: Coordinator;
  /** Events, metrics, the HTTP API and the Kafka bridge. */
  observability: RunningObservability;
  stop(): Promise<void>;
}

/** Connects to NATS and Redis and starts answering; `main.ts` only reads the environment and calls this. */
export async function startCoordinator(
  partial: Partial<CoordinatorOptions> = {},
  logger: Logger = silentLogger,
  observabilityPartial: Partial<ObservabilityOptions> = {},
): Promise<RunningCoordinator> {
  const opts = compileCoordinatorOptions(partial);
  const obsOpts = compileObservabilityOptions(observabilityPartial);
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true });
  await redis.connect();
  const nc = await connect({
    servers: opts.natsUrl.split(','),
    name: 'ferry-coordinator',
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: true,
    ...natsAuthOptionsFromFile(opts.natsCredentialsFile),
  });
  const coordinator = new Coordinator(nc, redis, opts, logger);
  await coordinator.start();
  // After the first lease attempt: a Kafka request consumed earlier would find no leader to run it.
  const observability = await startObservability(coordinator, nc, redis, { ...obsOpts, redisKeyPrefix: opts.redisKeyPrefix, coordinatorId: opts.coordinatorId }, logger);
  return {
    coordinator,
    observability,
    async stop() {
      await observability.stop();
      await coordinator.close();
      await nc.drain().catch(() => undefined);
      redis.disconnect();
    },
  };
}
