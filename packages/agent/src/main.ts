/** ferry-agent: the daemon each host runs (as root). Configuration comes from the environment. */
import pino from 'pino';
import { toFerryError } from '@ferry/protocol';
import { startAgent } from './start-agent';

async function main(): Promise<void> {
  const env = process.env;
  const host = env.FERRY_HOST;
  const logger = pino({ name: 'ferry-agent', level: env.FERRY_LOG_LEVEL ?? 'info' });
  if (!host) {
    logger.fatal('FERRY_HOST is not set');
    process.exit(2);
  }
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const running = await startAgent(
    {
      host,
      address: env.FERRY_ADDRESS ?? '',
      natsUrl: env.FERRY_NATS_URL,
      natsCredentialsFile: env.FERRY_NATS_CREDENTIALS || undefined,
      dataDir: env.FERRY_DATA_DIR,
      workDir: env.FERRY_WORK_DIR,
      heartbeatIntervalMs: num(env.FERRY_HEARTBEAT_INTERVAL_MS),
      criuPath: env.FERRY_CRIU_PATH,
      ghostLimitBytes: num(env.FERRY_GHOST_LIMIT_BYTES),
      maxImageBytes: num(env.FERRY_MAX_IMAGE_BYTES),
      lazyDump: env.FERRY_LAZY_DUMP !== 'off',
      pageTunnel: env.FERRY_PAGE_TUNNEL !== 'off',
      streamDump: env.FERRY_STREAM_DUMP !== 'off',
      memoryPrecopy: env.FERRY_PRECOPY !== 'off',
      precopyMinBytes: env.FERRY_PRECOPY_MIN_MIB ? num(env.FERRY_PRECOPY_MIN_MIB)! * 1024 * 1024 : undefined,
      localDirRoots: env.FERRY_LOCAL_DIR_ROOTS ? env.FERRY_LOCAL_DIR_ROOTS.split(',').filter(Boolean) : undefined,
      faults: {
        corruptImageFrame: num(env.FERRY_FAULT_CORRUPT_IMAGE_FRAME),
        refusePageRequestsAfter: num(env.FERRY_FAULT_REFUSE_PAGE_REQUESTS_AFTER),
        noPipeData: env.FERRY_FAULT_NO_PIPE_DATA === '1',
        manifestPatch: env.FERRY_FAULT_MANIFEST_PATCH ? (JSON.parse(env.FERRY_FAULT_MANIFEST_PATCH) as Record<string, Record<string, unknown>>) : undefined,
        hugePagemap: env.FERRY_FAULT_HUGE_PAGEMAP ? env.FERRY_FAULT_HUGE_PAGEMAP.split(',').filter(Boolean) : undefined,
        shadowWorkload: env.FERRY_FAULT_SHADOW_WORKLOAD || undefined,
      },
      // FERRY_METRICS_PORT=off serves no /metrics.
      metricsPort: env.FERRY_METRICS_PORT === 'off' ? null : num(env.FERRY_METRICS_PORT),
    },
    logger,
  );
  logger.info({ host }, 'agent ready');
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'stopping (workloads keep running)');
    void running.stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  const fe = toFerryError(err);
  process.stderr.write(`ferry-agent: ${fe.code}: ${fe.message}\n${fe.details.join('\n')}\n`);
  process.exit(1);
});
