/**
 * One coordinator leads: it holds `<prefix>leader` in Redis (SET NX PX), renews it every third of
 * its TTL, and steps down as soon as a renewal fails or finds another holder. A standby tries to
 * take the key on the same cadence, so it leads at most one TTL after the leader stopped renewing.
 * A leader that cannot reach Redis steps down on its own once the TTL has passed since its last
 * successful renewal, because by then a standby may have taken over.
 */
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { silentLogger, toFerryError, type Logger } from '@ferry/protocol';

/** Renew only if we still hold the key (never extend someone else's lease). */
const RENEW_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
/** Release only our own lease. */
const RELEASE_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface LeaderLeaseEvents {
  elected: [];
  deposed: [];
  /** The key had vanished (Redis restarted empty) and this leader took it again without a gap. */
  reacquired: [];
}

export class LeaderLease extends EventEmitter<LeaderLeaseEvents> {
  private timer: NodeJS.Timeout | null = null;
  private leading = false;
  private lastRenewedAt = 0;
  private ticking = false;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly id: string,
    private readonly ttlMs: number,
    private readonly log: Logger = silentLogger,
  ) {
    super();
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Tries at once, then keeps trying (standby) or renewing (leader) until stop(). */
  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.ttlMs / 3)));
  }

  /** Stops renewing and gives the lease up, so a standby takes over at once rather than after the TTL. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.leading) {
      this.setLeading(false);
      await this.redis.eval(RELEASE_SCRIPT, 1, this.key, this.id).catch(() => undefined);
    }
  }

  /** Who holds the lease now (null: nobody). */
  holder(): Promise<string | null> {
    return this.redis.get(this.key);
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      if (this.leading) {
        const renewed = await this.redis.eval(RENEW_SCRIPT, 1, this.key, this.id, String(this.ttlMs));
        if (renewed === 1) this.lastRenewedAt = Date.now();
        else if ((await this.redis.set(this.key, this.id, 'PX', this.ttlMs, 'NX')) === 'OK') {
          // The key vanished (a Redis restarted without persistence) and nobody else took it.
          this.lastRenewedAt = Date.now();
          this.log.warn({ coordinatorId: this.id }, 'leader lease had vanished from Redis; taken again');
          this.emit('reacquired');
        } else {
          this.log.warn({ coordinatorId: this.id }, 'leader lease lost to another coordinator');
          this.setLeading(false);
        }
      } else {
        const ok = await this.redis.set(this.key, this.id, 'PX', this.ttlMs, 'NX');
        if (ok === 'OK') {
          this.lastRenewedAt = Date.now();
          this.setLeading(true);
        }
      }
    } catch (err) {
      this.log.warn({ err: toFerryError(err).message }, 'leader lease: Redis not reachable');
      if (this.leading && Date.now() - this.lastRenewedAt >= this.ttlMs) this.setLeading(false);
    } finally {
      this.ticking = false;
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.log.info({ coordinatorId: this.id }, leading ? 'leading' : 'standing by');
    this.emit(leading ? 'elected' : 'deposed');
  }
}
