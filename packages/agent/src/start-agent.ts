import { join } from 'node:path';
import { connect } from 'nats';
import { createLinuxSyscalls } from '@ferry/native';
import { Agent } from './agent';
import { compileAgentOptions, type AgentOptions } from './agent-options';
import { CriuDriver } from './criu/criu-driver';
import { probeCriu } from './criu/criu-probe';
import { ensureCriuKdatCache, hostKdatCacheDeps } from './criu/kernel-feature-cache';
import { Inventory } from './workloads/inventory';
import { natsAuthOptionsFromFile, silentLogger, type Logger } from '@ferry/protocol';
import { presizeLargeNatsPayloads } from '@ferry/transfer';
import { WorkDirs } from './host/work-dir';
import { withFaults } from './fault-injection';
import { AgentMetrics, serveAgentMetrics } from './agent-metrics';

export interface RunningAgent {
  agent: Agent;
  stop(): Promise<void>;
}

/**
 * Wires an agent: tmpfs work dir, CRIU probe (which decides CRIU_FAULT), NATS, inventory.
 * Separate from main.ts so an embedder or a test can start one without reading the environment.
 */
export async function startAgent(partial: Partial<AgentOptions> & { host: string }, logger: Logger = silentLogger): Promise<RunningAgent> {
  const opts = compileAgentOptions(partial);
  const log = logger.child({ host: opts.host });
  const sys = createLinuxSyscalls();
  const workDirs = new WorkDirs(opts.workDir);
  await workDirs.prepare((s, t, f, fl, d) => sys.mount(s, t, f, fl, d), opts.workDirBytes);

  const probeStarted = Date.now();
  const probed = await probeCriu({ criuPath: opts.criuPath, workDir: join(opts.workDir, 'probe'), streamSyscalls: sys });
  // What the coordinator plans migrations from: a lazy dump or page tunnel switched off here
  // (FERRY_LAZY_DUMP=off, FERRY_PAGE_TUNNEL=off, FERRY_STREAM_DUMP=off, FERRY_PRECOPY=off) is one this host cannot do.
  const criuInfo = {
    ...probed,
    lazyDump: probed.lazyDump && opts.lazyDump,
    pageTunnel: probed.pageTunnel && opts.pageTunnel,
    stream: probed.stream && opts.streamDump,
    // Pre-copy rides on the streamed dump (its pages file is what the delta replaces).
    memoryPrecopy: probed.stream && opts.streamDump && opts.memoryPrecopy,
    pipeData: probed.pipeData && !opts.faults.noPipeData,
  };
  log.info({ criu: criuInfo, ms: Date.now() - probeStarted }, 'CRIU probed');
  // Where /run is not a tmpfs CRIU keeps no kernel-feature cache and every run probes the kernel first.
  if (probed.usable) await ensureCriuKdatCache(log, hostKdatCacheDeps(opts.criuPath));
  const criu = new CriuDriver(
    {
      criuPath: opts.criuPath,
      faultInjection: criuInfo.needsFaultInjection,
      ghostLimitBytes: opts.ghostLimitBytes,
    },
    log.child({ component: 'criu' }),
  );

  const inventory = new Inventory(join(opts.dataDir, 'agents', opts.host, 'inventory.json'));
  await inventory.load();

  // Image frames over NATS are megabytes each: collect each in one buffer (nats-large-payloads.ts).
  if (!presizeLargeNatsPayloads()) log.warn({}, 'nats.js internals changed: large NATS messages are collected in a growing buffer (slower)');
  const nc = await connect({
    servers: opts.natsUrl.split(','),
    name: `ferry-agent-${opts.host}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: true,
    ...natsAuthOptionsFromFile(opts.natsCredentialsFile),
  });
  const metrics = new AgentMetrics(opts.host);
  const agent = new Agent(opts, { nc: withFaults(nc, opts.faults), syscalls: sys, criu, criuInfo, workDirs, inventory, logger: log, metrics });
  await agent.start();
  // A metrics endpoint that cannot listen (port taken) is logged, not fatal: migrations matter more.
  const metricsServer =
    opts.metricsPort === null
      ? null
      : await serveAgentMetrics(metrics, opts.address || '0.0.0.0', opts.metricsPort).catch((err: Error) => {
          log.error({ err: err.message, port: opts.metricsPort }, 'metrics endpoint not served');
          return null;
        });
  return {
    agent,
    async stop() {
      metricsServer?.close();
      await agent.close();
      await nc.drain().catch(() => undefined);
    },
  };
}
