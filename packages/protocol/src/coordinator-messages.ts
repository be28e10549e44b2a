/**
 * Messages of the coordinator's verbs (CoordVerb), of registration and heartbeats, and the events
 * the coordinator publishes. verbs.ts pairs each verb with its request and reply.
 */
import { z } from 'zod';
import { SealPublicKey } from './sealed-key';
import { AbsolutePath, Version } from './fields';
import { RunRequest } from './agent-messages';
import { LifecycleEvent } from './lifecycle-event';
import {
  CriuInfo,
  ErrorBodySchema,
  HostInfo,
  HostMemory,
  HostName,
  Id,
  MigrationResult,
  MigrationState,
  MigrationStep,
  RestoreMode,
  TransportPreference,
  WorkloadInfo,
  WorkloadName,
} from './schemas';

export const RegisterRequest = z.object({
  v: Version,
  host: HostName,
  address: z.string().max(64),
  criu: CriuInfo,
  memory: HostMemory,
  agentPid: z.number().int().positive(),
  /** Changes on every agent start, so the coordinator can tell a restart from a duplicate. */
  bootId: Id,
  /** The agent's public key: migration secrets are sealed to it (sealed-key.ts). */
  sealKey: SealPublicKey.optional(),
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

/** The coordinator's answer to a registration: the heartbeat interval it expects of the agent. */
export const RegisterReply = z.object({ heartbeatIntervalMs: z.number().int().positive() });
export type RegisterReply = z.infer<typeof RegisterReply>;

export const Heartbeat = z.object({
  v: Version,
  host: HostName,
  bootId: Id,
  /** Repeated from registration so a restarted coordinator learns the host from its next heartbeat. */
  address: z.string().max(64),
  criu: CriuInfo,
  /** Repeated from registration, like the address. */
  sealKey: SealPublicKey.optional(),
  seq: z.number().int().nonnegative(),
  memory: HostMemory,
  /** Omitted when unchanged since the last full beat (same `workloadsDigest`); see workloads-digest.ts. */
  workloads: z.array(WorkloadInfo).max(100_000).optional(),
  /** workloadsDigest() of the host's current list. */
  workloadsDigest: z.string().max(64).optional(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

/** `ferry run --mount FS:PATH`: a filesystem of the cluster configuration, by name, and where. */
export const MountRef = z.object({ fs: Id, path: AbsolutePath });
export type MountRef = z.infer<typeof MountRef>;

export const CoordRunRequest = RunRequest.omit({ mounts: true }).extend({
  host: HostName,
  mounts: z.array(MountRef).max(32).default([]),
});
export type CoordRunRequest = z.infer<typeof CoordRunRequest>;

export const MigrateRequest = z.object({
  v: Version,
  workload: WorkloadName,
  /** Target host; without it the coordinator places the workload (see placement in the result). */
  to: HostName.optional(),
  /** A retried request with the same id returns the first migration instead of starting another. */
  requestId: Id.optional(),
  /** The image's data path (default auto: direct when the hosts reach each other, else NATS). */
  transport: TransportPreference.optional(),
  /** eager: the restore fills all memory first; lazy: see RestoreRequest.lazyPages. Default: lazy where the target's probe allows. */
  restore: RestoreMode.optional(),
  /**
   * Memory pre-copy: auto (default) where both hosts can and the workload is big enough; off sends
   * all its memory while it is frozen (for a workload that rewrites most of it all the time, where
   * the pass would be wasted).
   */
  precopy: z.enum(['auto', 'off']).optional(),
});
export type MigrateRequest = z.infer<typeof MigrateRequest>;

/** `migrate` answers when the migration has ended, whichever way. */
export const MigrateReply = z.object({ migration: MigrationResult });
export type MigrateReply = z.infer<typeof MigrateReply>;

export const StatusRequest = z.object({ v: Version, id: Id.optional() });
export type StatusRequest = z.infer<typeof StatusRequest>;

/** One migration when the request names it, else every one the coordinator keeps. */
export const StatusReply = z.object({ migrations: z.array(MigrationResult) });
export type StatusReply = z.infer<typeof StatusReply>;

export const MigrationEvent = z.object({
  v: Version,
  migrationId: Id,
  workload: WorkloadName,
  from: HostName,
  to: HostName,
  step: MigrationStep,
  state: MigrationState,
  at: z.string(),
  bytesTransferred: z.number().int().nonnegative().optional(),
  bytesTotal: z.number().int().nonnegative().optional(),
});
export type MigrationEvent = z.infer<typeof MigrationEvent>;

/** `hosts`: every host the coordinator knows, by name. */
export const HostsReply = z.object({ hosts: z.array(HostInfo) });
export type HostsReply = z.infer<typeof HostsReply>;

// ---- cordon and drain ----
export const HostRequest = z.object({ v: Version, host: HostName });
export type HostRequest = z.infer<typeof HostRequest>;

/** `cordon` and `uncordon`: the host as it is now. */
export const HostReply = z.object({ host: HostInfo });
export type HostReply = z.infer<typeof HostReply>;

export const DrainRequest = z.object({
  v: Version,
  host: HostName,
  /** Chosen by the caller so it can subscribe to `events.drain` before asking. */
  drainId: Id,
  /** For every migration of the drain, as in MigrateRequest (e.g. post-copy to empty a host fast). */
  transport: TransportPreference.optional(),
  restore: RestoreMode.optional(),
});
export type DrainRequest = z.infer<typeof DrainRequest>;

export const DrainReply = z.object({
  drainId: Id,
  /** Workloads the drain will move, in the order it starts them. */
  workloads: z.array(WorkloadName).max(100_000),
});
export type DrainReply = z.infer<typeof DrainReply>;

export const DrainSummary = z.object({
  host: HostName,
  total: z.number().int().nonnegative(),
  succeeded: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  /** Workloads no host could take. */
  unplaced: z.number().int().nonnegative(),
  totalMs: z.number().nonnegative(),
});
export type DrainSummary = z.infer<typeof DrainSummary>;

/** One per finished migration of a drain (`result`), then one `done` with the summary. */
export const DrainEvent = z.discriminatedUnion('kind', [
  z.object({ v: Version, drainId: Id, kind: z.literal('result'), migration: MigrationResult }),
  /** No host could take the workload (or its migration could not start); it stays where it is. */
  z.object({ v: Version, drainId: Id, kind: z.literal('unplaced'), workload: WorkloadName, error: ErrorBodySchema }),
  z.object({ v: Version, drainId: Id, kind: z.literal('done'), summary: DrainSummary }),
]);
export type DrainEvent = z.infer<typeof DrainEvent>;

/** The most lifecycle events one `events` request may ask for (a coordinator keeps 1000 by default). */
export const MAX_EVENTS_PER_REQUEST = 10_000;

export const EventsRequest = z.object({ v: Version, limit: z.number().int().positive().max(MAX_EVENTS_PER_REQUEST).optional() });
export type EventsRequest = z.infer<typeof EventsRequest>;

/** The most recent lifecycle events, oldest first. */
export const EventsReply = z.object({ events: z.array(LifecycleEvent) });
export type EventsReply = z.infer<typeof EventsReply>;
