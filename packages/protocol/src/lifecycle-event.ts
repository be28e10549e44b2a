/**
 * The lifecycle event document: what `ferry events` prints, what the coordinator republishes on
 * `ferry.v1.events.lifecycle` and produces to the Kafka topic `ferry.events` (as JSON).
 * One shape for every kind, so a consumer switches on `type` and `step` only.
 */
import { z } from 'zod';
import { ErrorBodySchema, MigrationState } from './schemas';

/**
 * Steps per type. Migration steps are named for what has just happened (the runner's internal
 * step names say what is about to start; the coordinator maps them, see lifecycle-events.ts).
 */
export const LifecycleStep = {
  migration: ['requested', 'preflight-passed', 'frozen', 'transferred', 'restored', 'rolling-back', 'succeeded', 'rolled-back', 'failed'],
  host: ['joined', 'lost', 'restarted', 'cordoned', 'uncordoned'],
  request: ['accepted', 'rejected', 'duplicate'],
  drain: ['drain-finished'],
} as const;

export const LifecycleEvent = z.object({
  type: z.enum(['migration', 'host', 'request', 'drain']),
  step: z.string().max(64),
  /** ISO time the step happened (as seen by the component that reported it). */
  at: z.string(),
  /** Kafka key: the workload for migration and request events, the host for host and drain events. */
  key: z.string().max(256),
  migrationId: z.string().optional(),
  workload: z.string().optional(),
  from: z.string().optional(),
  to: z.string().optional(),
  host: z.string().optional(),
  state: MigrationState.optional(),
  requestId: z.string().nullable().optional(),
  drainId: z.string().optional(),
  transport: z.string().optional(),
  /** How the memory left the source (MigrationResult.memory). */
  memory: z.string().optional(),
  /** The workload's local dirs that move with it (`ferry run --local-dir`). */
  localDirs: z.array(z.string().max(1024)).max(16).optional(),
  pid: z.number().int().nullable().optional(),
  /** Numbers known at this step: bytesTransferred, bytesTotal, downtimeMs, totalMs, dumpMs, ... */
  figures: z.record(z.string(), z.number()),
  error: ErrorBodySchema.optional(),
});
export type LifecycleEvent = z.infer<typeof LifecycleEvent>;
