import { connect } from 'nats';
import { Redis } from 'ioredis';
import { silentLogger, type Logger } from '@ferry/protocol';
import { Coordinator } from './coordinator';
import { compileCoordinatorOptions, type CoordinatorOptions } from './coordinator-options';

export interface RunningCoordinator {
  coordinator: Coordinator;
  stop(): Promise<void>;
}

/** Connects to NATS and Redis and starts answering; `main.ts` only reads the environment and calls this. */
export async function startCoordinator(partial: Partial<CoordinatorOptions> = {}, logger: Logger = silentLogger): Promise<RunningCoordinator> {
  const opts = compileCoordinatorOptions(partial);
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true });
  await redis.connect();
  const nc = await connect({
    servers: opts.natsUrl.split(','),
    name: 'ferry-coordinator',
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: true,
  });
  const coordinator = new Coordinator(nc, redis, opts, logger);
  await coordinator.start();
  return {
    coordinator,
    async stop() {
      await coordinator.close();
      await nc.drain().catch(() => undefined);
      redis.disconnect();
    },
  };
}
