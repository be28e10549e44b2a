/**
 * Migrations in Redis. Each step is written here before it is carried out, so a coordinator that
 * restarts finds every migration in flight and the step it was at.
 *
 * Keys (under the prefix):
 *   migration:<id>        JSON of the migration record
 *   migrations            sorted set of ids by request time
 *   lock:workload:<name>  id of the migration that holds the workload (at most one at a time)
 *   request:<requestId>   id of the migration a request started (idempotent retries)
 */
import type { Redis } from 'ioredis';
import { ErrorCode, FerryError, type MigrationResult, type MigrationStep } from '@ferry/protocol';

export interface MigrationRecord extends MigrationResult {
  transferId: string;
  requestId: string | null;
  /** Wall-clock ms the workload was frozen, once known. */
  frozenAt: number | null;
}

/** How many finished migrations `status` keeps. */
export const MIGRATION_HISTORY_LIMIT = 1_000;

export class MigrationStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private k(suffix: string): string {
    return `${this.prefix}${suffix}`;
  }

  /**
   * Creates the record and takes the workload's lock in one transaction-like sequence: the lock is
   * taken first (SET NX), so two concurrent requests for one workload cannot both proceed.
   */
  async create(m: MigrationRecord): Promise<void> {
    const locked = await this.redis.set(this.k(`lock:workload:${m.workload}`), m.id, 'NX');
    if (locked !== 'OK') {
      const holder = await this.redis.get(this.k(`lock:workload:${m.workload}`));
      throw new FerryError(ErrorCode.CONFLICT, `workload ${m.workload} is already being migrated (${holder ?? 'unknown'})`);
    }
    await this.redis
      .multi()
      .set(this.k(`migration:${m.id}`), JSON.stringify(m))
      .zadd(this.k('migrations'), Date.parse(m.requestedAt), m.id)
      .exec();
  }

  /** Claims a request id for a migration id; returns the id that already holds it, if any. */
  async claimRequest(requestId: string, migrationId: string): Promise<string | null> {
    const ok = await this.redis.set(this.k(`request:${requestId}`), migrationId, 'EX', 24 * 3600, 'NX');
    if (ok === 'OK') return null;
    return this.redis.get(this.k(`request:${requestId}`));
  }

  /** The migration a request id started, if any. */
  async requestHolder(requestId: string): Promise<string | null> {
    return this.redis.get(this.k(`request:${requestId}`));
  }

  /** Frees a request id whose migration never started (e.g. the workload was locked: CONFLICT). */
  async releaseRequest(requestId: string, migrationId: string): Promise<void> {
    const key = this.k(`request:${requestId}`);
    if ((await this.redis.get(key)) === migrationId) await this.redis.del(key);
  }

  async save(m: MigrationRecord): Promise<void> {
    await this.redis.set(this.k(`migration:${m.id}`), JSON.stringify(m));
  }

  /** Persists the next step (with its time in the history) before the caller carries it out. */
  async step(m: MigrationRecord, step: MigrationStep): Promise<void> {
    m.step = step;
    m.history.push({ step, at: new Date().toISOString() });
    await this.save(m);
  }

  /** Final write: the record and the release of the workload's lock. */
  async finish(m: MigrationRecord): Promise<void> {
    const lockKey = this.k(`lock:workload:${m.workload}`);
    const holder = await this.redis.get(lockKey);
    const tx = this.redis.multi().set(this.k(`migration:${m.id}`), JSON.stringify(m));
    if (holder === m.id) tx.del(lockKey);
    await tx.exec();
    await this.trim();
  }

  async get(id: string): Promise<MigrationRecord | null> {
    const json = await this.redis.get(this.k(`migration:${id}`));
    return json ? (JSON.parse(json) as MigrationRecord) : null;
  }

  async list(limit = 100): Promise<MigrationRecord[]> {
    const ids = await this.redis.zrevrange(this.k('migrations'), 0, limit - 1);
    if (ids.length === 0) return [];
    const jsons = await this.redis.mget(ids.map((id) => this.k(`migration:${id}`)));
    return jsons.filter((j): j is string => j !== null).map((j) => JSON.parse(j) as MigrationRecord);
  }

  /** Id of the migration holding the workload's lock, if any. */
  lockHolder(workload: string): Promise<string | null> {
    return this.redis.get(this.k(`lock:workload:${workload}`));
  }

  /** The most recent migration of `workload` out of `from`, among the last MIGRATION_HISTORY_LIMIT. */
  async latestFrom(workload: string, from: string): Promise<MigrationRecord | null> {
    return (await this.list(MIGRATION_HISTORY_LIMIT)).find((m) => m.workload === workload && m.from === from) ?? null;
  }

  async inFlight(): Promise<MigrationRecord[]> {
    return (await this.list(MIGRATION_HISTORY_LIMIT)).filter((m) => m.state === 'pending' || m.state === 'running');
  }

  private async trim(): Promise<void> {
    const count = await this.redis.zcard(this.k('migrations'));
    if (count <= MIGRATION_HISTORY_LIMIT) return;
    const old = await this.redis.zrange(this.k('migrations'), 0, count - MIGRATION_HISTORY_LIMIT - 1);
    const finished = (await Promise.all(old.map((id) => this.get(id)))).filter(
      (m): m is MigrationRecord => m !== null && m.state !== 'pending' && m.state !== 'running',
    );
    if (finished.length === 0) return;
    await this.redis
      .multi()
      .del(...finished.map((m) => this.k(`migration:${m.id}`)))
      .zrem(this.k('migrations'), ...finished.map((m) => m.id))
      .exec();
  }
}
