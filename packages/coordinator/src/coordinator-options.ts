import { ErrorCode, FerryError, RestoreMode, type FilesystemSpec } from '@ferry/protocol';

/** A host that has not sent a heartbeat for this long is lost (three missed 1 s beats). */
export const DEFAULT_HOST_LOST_AFTER_MS = 3_000;
/** How often hosts are checked for lost heartbeats. */
export const LIVENESS_SWEEP_INTERVAL_MS = 500;

export interface CoordinatorOptions {
  /** The cluster's shared filesystems, by name (`ferry run --mount NAME:PATH`). */
  filesystems: FilesystemSpec[];
  natsUrl: string;
  /** The coordinator's NATS credentials file (see @ferry/protocol nats-credentials.ts); null: anonymous. */
  natsCredentialsFile: string | null;
  redisUrl: string;
  /** Prefix of every Redis key, so several clusters can share one Redis. */
  redisKeyPrefix: string;
  hostLostAfterMs: number;
  /** A side that sends or receives nothing for this long fails the transfer. */
  transferIdleTimeoutMs: number;
  /** Longest a CRIU restore may take on the target. */
  restoreTimeoutMs: number;
  /** Longest a dump + transfer may take in all (the idle timeout catches a dead peer much sooner). */
  checkpointTimeoutMs: number;
  /** How long a short agent request (receive, release, resume, discard) may take. */
  agentRequestTimeoutMs: number;
  /** At most this many migrations leave one host at once (drain and placement respect it). */
  maxMigrationsPerSource: number;
  /** At most this many migrations enter one host at once (drain and placement respect it). */
  maxMigrationsPerTarget: number;
  /** Leader lease in Redis: a standby takes over this long after the leader stopped renewing. */
  leaseTtlMs: number;
  /** This coordinator's name in the lease (unique per process). */
  coordinatorId: string;
  /** How often a restarted leader retries in-flight migrations it could not settle yet. */
  recoveryRetryMs: number;
  /**
   * Restore mode of a migration that names none (FERRY_DEFAULT_RESTORE), where the hosts allow it
   * (migration-plan.ts); null: lazy where the target allows it, else eager.
   */
  defaultRestore: RestoreMode | null;
}

export function defaultCoordinatorOptions(): CoordinatorOptions {
  return {
    filesystems: [],
    natsUrl: 'nats://127.0.0.1:4222',
    natsCredentialsFile: null,
    redisUrl: 'redis://127.0.0.1:6379',
    redisKeyPrefix: 'ferry:',
    hostLostAfterMs: DEFAULT_HOST_LOST_AFTER_MS,
    transferIdleTimeoutMs: 5_000,
    restoreTimeoutMs: 5 * 60_000,
    checkpointTimeoutMs: 30 * 60_000,
    agentRequestTimeoutMs: 10_000,
    maxMigrationsPerSource: 2,
    maxMigrationsPerTarget: 2,
    leaseTtlMs: 5_000,
    coordinatorId: `c-${process.pid}-${Date.now().toString(36)}`,
    recoveryRetryMs: 2_000,
    defaultRestore: null,
  };
}

export function compileCoordinatorOptions(partial: Partial<CoordinatorOptions> = {}): CoordinatorOptions {
  const o = { ...defaultCoordinatorOptions() };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (o as Record<string, unknown>)[k] = v;
  for (const k of [
    'hostLostAfterMs',
    'transferIdleTimeoutMs',
    'restoreTimeoutMs',
    'checkpointTimeoutMs',
    'agentRequestTimeoutMs',
    'maxMigrationsPerSource',
    'maxMigrationsPerTarget',
    'leaseTtlMs',
    'recoveryRetryMs',
  ] as const) {
    if (!Number.isFinite(o[k]) || o[k] <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${k} must be a positive number`);
  }
  for (const k of ['maxMigrationsPerSource', 'maxMigrationsPerTarget'] as const) {
    if (!Number.isInteger(o[k])) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${k} must be a whole number`);
  }
  if (o.defaultRestore !== null && !RestoreMode.safeParse(o.defaultRestore).success) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `defaultRestore must be eager, lazy or post-copy, got ${String(o.defaultRestore)}`);
  }
  // A lease renewed every third of its life survives two missed renewals.
  if (o.leaseTtlMs < 300) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'leaseTtlMs must be at least 300');
  return o;
}
