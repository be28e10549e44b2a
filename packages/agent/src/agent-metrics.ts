/**
 * The agent's own Prometheus metrics, served at http://<agent address>:<port>/metrics: what this
 * host's CRIU and transfers did, measured where they happen (the coordinator's /metrics has the
 * cluster view). Labels are bounded: a verb from the protocol's list, a code from its error codes.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkloadInfo } from '@ferry/protocol';

/** Default port of an agent's metrics endpoint (the coordinator's is 9464). */
export const DEFAULT_AGENT_METRICS_PORT = 9465;
const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly dumpSeconds = new Histogram({
    name: 'ferry_agent_criu_dump_duration_seconds',
    help: 'Time criu dump took on this host (the workload is frozen for all of it)',
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly restoreSeconds = new Histogram({
    name: 'ferry_agent_criu_restore_duration_seconds',
    help: 'Time criu restore took on this host, until the workload ran again',
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly transferBytes = new Counter({
    name: 'ferry_agent_transfer_bytes_total',
    help: 'Image bytes this host sent or received',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  private readonly throughput = new Gauge({
    name: 'ferry_agent_transfer_throughput_bytes_per_second',
    help: 'Throughput of the last image this host sent',
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: 'ferry_agent_errors_total',
    help: 'Requests this agent answered with an error, by verb and error code',
    labelNames: ['verb', 'code'] as const,
    registers: [this.registry],
  });
  private readonly workloads = new Gauge({
    name: 'ferry_agent_workloads',
    help: 'Workloads this agent knows, by state',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });

  constructor(host: string) {
    this.registry.setDefaultLabels({ host });
    collectDefaultMetrics({ register: this.registry, prefix: 'ferry_agent_' });
  }

  dumped(ms: number): void {
    this.dumpSeconds.observe(ms / 1000);
  }

  restored(ms: number): void {
    this.restoreSeconds.observe(ms / 1000);
  }

  sent(bytes: number, ms: number): void {
    this.transferBytes.inc({ direction: 'sent' }, bytes);
    if (ms > 0) this.throughput.set((bytes * 1000) / ms);
  }

  received(bytes: number): void {
    this.transferBytes.inc({ direction: 'received' }, bytes);
  }

  failed(subject: string, code: string): void {
    // The verb is the subject's last token (ferry.v1.agent.<host>.<verb>): a bounded set.
    this.errors.inc({ verb: subject.slice(subject.lastIndexOf('.') + 1), code });
  }

  inventory(list: WorkloadInfo[]): void {
    for (const state of ['running', 'frozen', 'exited'] as const) this.workloads.set({ state }, list.filter((w) => w.state === state).length);
  }
}

/** Serves `metrics` on address:port until closed; port 0 picks a free one. */
export async function serveAgentMetrics(metrics: AgentMetrics, address: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve());
  });
  return server;
}
