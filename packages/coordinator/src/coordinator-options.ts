import { ErrorCode, FerryError } from '@ferry/protocol';

/** A host that has not sent a heartbeat for this long is lost (three missed 1 s beats). */
export const DEFAULT_HOST_LOST_AFTER_MS = 3_000;
/** How often hosts are checked for lost heartbeats. */
export const LIVENESS_SWEEP_INTERVAL_MS = 500;

export interface CoordinatorOptions {
  natsUrl: string;
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
}

export function defaultCoordinatorOptions(): CoordinatorOptions {
  return {
    natsUrl: 'nats://127.0.0.1:4222',
    redisUrl: 'redis://127.0.0.1:6379',
    redisKeyPrefix: 'ferry:',
    hostLostAfterMs: DEFAULT_HOST_LOST_AFTER_MS,
    transferIdleTimeoutMs: 5_000,
    restoreTimeoutMs: 5 * 60_000,
    checkpointTimeoutMs: 30 * 60_000,
    agentRequestTimeoutMs: 10_000,
  };
}

export function compileCoordinatorOptions(partial: Partial<CoordinatorOptions> = {}): CoordinatorOptions {
  const o = { ...defaultCoordinatorOptions() };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (o as Record<string, unknown>)[k] = v;
  for (const k of ['hostLostAfterMs', 'transferIdleTimeoutMs', 'restoreTimeoutMs', 'checkpointTimeoutMs', 'agentRequestTimeoutMs'] as const) {
    if (!Number.isFinite(o[k]) || o[k] <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${k} must be a positive number`);
  }
  return o;
}
