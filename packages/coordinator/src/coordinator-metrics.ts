/**
 * Prometheus metrics of the cluster, kept by the coordinator from lifecycle events (counters and
 * histograms) and read from the host registry at scrape time (gauges). The agents' figures (CRIU
 * dump and restore times, transfer throughput, errors) come back to the coordinator in every
 * migration's result, so they are exported here with a `host` label instead of by a second HTTP
 * server per agent: one scrape target, and label values bounded by the cluster's hosts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { HostInfo, LifecycleEvent, WorkloadInfo } from '@ferry/protocol';

/** Downtime buckets: sub-second for small workloads up to a minute for many GiB. */
const DOWNTIME_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];
/** Whole-migration buckets, pre-flight to release. */
const DURATION_BUCKETS_S = [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600];
/** CRIU dump/restore buckets. */
const CRIU_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];
/** 1 MB/s .. 2 GB/s: loopback TCP measured ~1 GB/s, NATS 0.2-0.3 GB/s (DESIGN.md). */
const THROUGHPUT_BUCKETS = [1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2e9];

/** What the gauges read at scrape time. */
export interface ClusterView {
  hosts(): HostInfo[];
  workloads(): WorkloadInfo[];
  /** Migrations this coordinator runs now. */
  inFlight(): number;
}

export class CoordinatorMetrics {
  readonly registry = new Registry();
  private readonly migrations: Counter<'result'>;
  private readonly downtime: Histogram;
  private readonly duration: Histogram<'result'>;
  private readonly transferBytes: Counter;
  private readonly throughput: Histogram<'host'>;
  private readonly criuDump: Histogram<'host'>;
  private readonly criuRestore: Histogram<'host'>;
  private readonly errors: Counter<'code' | 'source'>;
  /** Bytes already counted per migration from progress events (the rest is added at `transferred`). */
  private readonly counted = new Map<string, number>();

  constructor(view: ClusterView) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.migrations = new Counter({ name: 'ferry_migrations_total', help: 'Finished migrations by result', labelNames: ['result'], registers });
    for (const result of ['succeeded', 'rolled-back', 'failed']) this.migrations.inc({ result }, 0);
    this.downtime = new Histogram({ name: 'ferry_migration_downtime_seconds', help: 'Time a workload was frozen, of succeeded migrations', buckets: DOWNTIME_BUCKETS_S, registers });
    this.duration = new Histogram({
      name: 'ferry_migration_duration_seconds',
      help: 'Request to end of a migration, by result',
      labelNames: ['result'],
      buckets: DURATION_BUCKETS_S,
      registers,
    });
    this.transferBytes = new Counter({ name: 'ferry_transfer_bytes_total', help: 'Checkpoint image bytes received by targets', registers });
    this.throughput = new Histogram({
      name: 'ferry_transfer_throughput_bytes_per_second',
      help: 'Image transfer throughput per migration, by source host',
      labelNames: ['host'],
      buckets: THROUGHPUT_BUCKETS,
      registers,
    });
    this.criuDump = new Histogram({ name: 'ferry_criu_dump_duration_seconds', help: 'CRIU dump time, by source host', labelNames: ['host'], buckets: CRIU_BUCKETS_S, registers });
    this.criuRestore = new Histogram({ name: 'ferry_criu_restore_duration_seconds', help: 'CRIU restore time, by target host', labelNames: ['host'], buckets: CRIU_BUCKETS_S, registers });
    this.errors = new Counter({
      name: 'ferry_errors_total',
      help: 'Errors by protocol code; source is migration (a failed or rolled-back migration) or request (a rejected request)',
      labelNames: ['code', 'source'],
      registers,
    });
    new Gauge({
      name: 'ferry_migrations_in_flight',
      help: 'Migrations this coordinator is running now',
      registers,
      collect() {
        this.set(view.inFlight());
      },
    });
    new Gauge({
      name: 'ferry_hosts',
      help: 'Hosts by state (alive, lost, cordoned; a cordoned host also counts as alive or lost)',
      labelNames: ['state'],
      registers,
      collect() {
        const hosts = view.hosts();
        this.set({ state: 'alive' }, hosts.filter((h) => h.state === 'alive').length);
        this.set({ state: 'lost' }, hosts.filter((h) => h.state === 'lost').length);
        this.set({ state: 'cordoned' }, hosts.filter((h) => h.cordoned).length);
      },
    });
    new Gauge({
      name: 'ferry_workloads',
      help: 'Running or frozen workloads per host',
      labelNames: ['host'],
      registers,
      collect() {
        this.reset();
        for (const h of view.hosts()) this.set({ host: h.name }, 0);
        for (const w of view.workloads()) if (w.state !== 'exited') this.inc({ host: w.host });
      },
    });
  }

  /** A target's cumulative byte count for one migration. */
  progress(migrationId: string, bytes: number): void {
    const before = this.counted.get(migrationId) ?? 0;
    if (bytes > before) {
      this.transferBytes.inc(bytes - before);
      this.counted.set(migrationId, bytes);
    }
  }

  observe(ev: LifecycleEvent): void {
    if (ev.type === 'request' && ev.step === 'rejected') this.errors.inc({ code: ev.error?.code ?? 'INTERNAL', source: 'request' });
    if (ev.type !== 'migration' || !ev.migrationId) return;
    const f = ev.figures;
    if (ev.step === 'transferred') {
      const bytes = f.bytesTransferred ?? 0;
      this.progress(ev.migrationId, bytes);
      if (ev.from && f.dumpMs !== undefined) this.criuDump.observe({ host: ev.from }, f.dumpMs / 1000);
      if (ev.from && f.transferMs) this.throughput.observe({ host: ev.from }, bytes / (f.transferMs / 1000));
    }
    if (ev.step === 'restored' && ev.to && f.restoreMs !== undefined) this.criuRestore.observe({ host: ev.to }, f.restoreMs / 1000);
    if (ev.step === 'succeeded' || ev.step === 'rolled-back' || ev.step === 'failed') {
      this.counted.delete(ev.migrationId);
      this.migrations.inc({ result: ev.step });
      if (f.totalMs !== undefined) this.duration.observe({ result: ev.step }, f.totalMs / 1000);
      if (ev.step === 'succeeded' && f.downtimeMs !== undefined) this.downtime.observe(f.downtimeMs / 1000);
      if (ev.error) this.errors.inc({ code: ev.error.code, source: 'migration' });
    }
  }
}
