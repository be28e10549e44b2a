/**
 * Registration and heartbeats: how the coordinator learns this host is alive, what its CRIU can do
 * and which workloads it runs. The coordinator's registration reply says how often it expects a
 * beat (it derives that from how soon it declares a silent host lost), and the agent follows it.
 */
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from 'nats';
import {
  encode,
  FULL_HEARTBEAT_EVERY,
  PROTOCOL_VERSION,
  requestRegistration,
  silentLogger,
  subjects,
  toFerryError,
  workloadsDigest,
  type CriuInfo,
  type Heartbeat,
  type Logger,
  type WorkloadInfo,
} from '@ferry/protocol';
import { readHostMemory } from './host/host-memory';

/** Bounds on the interval a coordinator may ask for: a hostile or broken reply cannot stop the beats or flood the bus. */
export const MIN_HEARTBEAT_INTERVAL_MS = 100;
export const MAX_HEARTBEAT_INTERVAL_MS = 60_000;
const REGISTER_TIMEOUT_MS = 2_000;

export interface HeartbeatOptions {
  host: string;
  address: string;
  /** This agent's public seal key (sealed-key.ts in @ferry/protocol), registered and repeated in every beat. */
  sealKey: Uint8Array;
  /** Until the coordinator says otherwise. */
  intervalMs: number;
}

export class HeartbeatLoop {
  /** Changes on every agent start, so the coordinator can tell a restart from a duplicate. */
  readonly bootId = `b${randomBytes(6).toString('hex')}`;
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private lastDigest = '';
  private registered = false;
  private closed = false;
  private intervalMs: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: HeartbeatOptions,
    private readonly criuInfo: CriuInfo,
    private readonly listWorkloads: () => Promise<WorkloadInfo[]>,
    private readonly log: Logger = silentLogger,
  ) {
    this.intervalMs = opts.intervalMs;
  }

  /** The interval beats are sent at now. */
  get currentIntervalMs(): number {
    return this.intervalMs;
  }

  /** Beats once now, then every interval until stopped. */
  async start(): Promise<void> {
    this.schedule();
    await this.beat();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** A coordinator that restarted asks agents to register again by answering a heartbeat with NOT_FOUND. */
  forgetRegistration(): void {
    this.registered = false;
  }

  private schedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => void this.beat(), this.intervalMs);
  }

  private async beat(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.registered) await this.register();
      const workloads = await this.listWorkloads();
      const digest = workloadsDigest(workloads);
      const seq = this.seq++;
      // The full list only when it changed, and every few beats so a restarted coordinator catches up.
      const full = digest !== this.lastDigest || seq % FULL_HEARTBEAT_EVERY === 0;
      this.lastDigest = digest;
      const hb: Heartbeat = {
        v: PROTOCOL_VERSION,
        host: this.opts.host,
        bootId: this.bootId,
        address: this.opts.address,
        criu: this.criuInfo,
        sealKey: this.opts.sealKey,
        seq,
        memory: await readHostMemory(),
        workloadsDigest: digest,
        ...(full ? { workloads } : {}),
      };
      this.nc.publish(subjects.heartbeat(this.opts.host), encode(hb));
    } catch (err) {
      // The coordinator may not be up yet or may be restarting; registration is retried next beat.
      this.log.debug({ err: toFerryError(err).message }, 'coordinator not reachable');
    }
  }

  private async register(): Promise<void> {
    const reply = await requestRegistration(
      this.nc,
      this.opts.host,
      {
        host: this.opts.host,
        address: this.opts.address,
        criu: this.criuInfo,
        memory: await readHostMemory(),
        agentPid: process.pid,
        bootId: this.bootId,
        sealKey: this.opts.sealKey,
      },
      { timeoutMs: REGISTER_TIMEOUT_MS },
    );
    this.registered = true;
    const wanted = Math.min(MAX_HEARTBEAT_INTERVAL_MS, Math.max(MIN_HEARTBEAT_INTERVAL_MS, reply.heartbeatIntervalMs));
    if (wanted !== this.intervalMs && !this.closed) {
      this.intervalMs = wanted;
      this.schedule();
    }
    this.log.info({ bootId: this.bootId, heartbeatIntervalMs: this.intervalMs }, 'registered with the coordinator');
  }
}
