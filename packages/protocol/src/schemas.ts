/**
 * Message schemas. Every message crossing NATS is checked against one of these on receipt;
 * anything else is answered with INVALID_ARGUMENT. Sizes are bounded so a hostile peer cannot
 * make a receiver allocate without limit.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './version';

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const HostName = z.string().regex(TOKEN, 'host names are lowercase letters, digits, - and _ (at most 63)');
export const WorkloadName = z.string().regex(TOKEN, 'workload names are lowercase letters, digits, - and _ (at most 63)');
export const Id = z.string().regex(TOKEN, 'ids are lowercase letters, digits, - and _ (at most 63)');
const AbsolutePath = z
  .string()
  .max(4096)
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..') && !p.includes('\0'), 'must be an absolute path without ..');

const Version = z.literal(PROTOCOL_VERSION);

export const ErrorBodySchema = z.object({
  code: z.string().max(64),
  message: z.string().max(64 * 1024),
  details: z.array(z.string().max(4096)).max(200).optional(),
});

export const CriuInfo = z.object({
  /** e.g. "4.1.1"; empty when criu is missing. */
  version: z.string().max(64),
  /** Everything below passed: this host can checkpoint and restore. */
  usable: z.boolean(),
  /** `criu check` said "Looks good". */
  checkOk: z.boolean(),
  /** A throwaway process survived dump + restore only with CRIU_FAULT=130 (no hardware breakpoints). */
  needsFaultInjection: z.boolean(),
  /** The throwaway dump/restore worked (with or without fault injection). */
  dumpRestoreOk: z.boolean(),
  /** Why it is not usable, when it is not. */
  problem: z.string().max(4096).optional(),
});
export type CriuInfo = z.infer<typeof CriuInfo>;

export const WorkloadState = z.enum(['running', 'frozen', 'exited']);
export type WorkloadState = z.infer<typeof WorkloadState>;

export const WorkloadInfo = z.object({
  name: WorkloadName,
  host: HostName,
  state: WorkloadState,
  /** Root process of the workload in the machine's initial PID namespace. */
  pid: z.number().int().nonnegative(),
  rssBytes: z.number().int().nonnegative(),
  argv: z.array(z.string().max(4096)).max(256),
  startedAt: z.string().max(64),
  /** Set when the workload has exited. */
  exitCode: z.number().int().nullable().optional(),
});
export type WorkloadInfo = z.infer<typeof WorkloadInfo>;

export const HostMemory = z.object({ totalBytes: z.number().nonnegative(), availableBytes: z.number().nonnegative() });

export const HostInfo = z.object({
  name: HostName,
  state: z.enum(['alive', 'lost']),
  cordoned: z.boolean(),
  address: z.string().max(64),
  criu: CriuInfo,
  memory: HostMemory,
  workloadCount: z.number().int().nonnegative(),
  lastHeartbeatAt: z.string().max(64),
});
export type HostInfo = z.infer<typeof HostInfo>;

export const MigrationState = z.enum(['pending', 'running', 'succeeded', 'rolled-back', 'failed']);
export type MigrationState = z.infer<typeof MigrationState>;

/** Steps of a migration in order; each is persisted before it starts. */
export const MigrationStep = z.enum([
  'requested',
  'preflight',
  'receiving',
  'checkpointing',
  'restoring',
  'releasing',
  'done',
  'rolling-back',
]);
export type MigrationStep = z.infer<typeof MigrationStep>;

export const MigrationResult = z.object({
  id: Id,
  workload: WorkloadName,
  from: HostName,
  to: HostName,
  state: MigrationState,
  step: MigrationStep,
  requestedAt: z.string(),
  finishedAt: z.string().nullable(),
  /** Time the workload did not run: from freeze to resume on the target (or thaw on the source). */
  downtimeMs: z.number().nonnegative(),
  totalMs: z.number().nonnegative(),
  bytesTransferred: z.number().int().nonnegative(),
  transport: z.enum(['nats']),
  phases: z.object({
    dumpMs: z.number().nonnegative(),
    transferMs: z.number().nonnegative(),
    restoreMs: z.number().nonnegative(),
  }),
  /** Pid on the target after success. */
  pid: z.number().int().nullable(),
  error: ErrorBodySchema.nullable(),
  history: z.array(z.object({ step: MigrationStep, at: z.string() })).max(100),
});
export type MigrationResult = z.infer<typeof MigrationResult>;

// ---- agent requests ----
export const RunRequest = z.object({
  v: Version,
  name: WorkloadName,
  argv: z.array(z.string().max(4096)).min(1).max(256),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).max(256), z.string().max(32 * 1024)).default({}),
  cwd: AbsolutePath.optional(),
});
export type RunRequest = z.infer<typeof RunRequest>;

export const NameRequest = z.object({ v: Version, name: WorkloadName });
export type NameRequest = z.infer<typeof NameRequest>;

export const EmptyRequest = z.object({ v: Version });

export const ReceiveRequest = z.object({
  v: Version,
  migrationId: Id,
  transferId: Id,
  workload: WorkloadName,
  source: HostName,
  /** The target abandons the transfer when nothing arrives for this long. */
  idleTimeoutMs: z.number().int().positive().max(600_000),
});
export type ReceiveRequest = z.infer<typeof ReceiveRequest>;

export const CheckpointRequest = z.object({
  v: Version,
  migrationId: Id,
  transferId: Id,
  workload: WorkloadName,
  target: HostName,
  idleTimeoutMs: z.number().int().positive().max(600_000),
});
export type CheckpointRequest = z.infer<typeof CheckpointRequest>;

export const CheckpointReply = z.object({
  dumpMs: z.number(),
  transferMs: z.number(),
  bytes: z.number().int().nonnegative(),
  files: z.number().int().nonnegative(),
  /** Wall-clock time (ms since epoch) the workload was frozen; downtime is measured from it. */
  frozenAt: z.number(),
});
export type CheckpointReply = z.infer<typeof CheckpointReply>;

export const MigrationRef = z.object({ v: Version, migrationId: Id, workload: WorkloadName });
export type MigrationRef = z.infer<typeof MigrationRef>;

export const RestoreReply = z.object({
  pid: z.number().int().positive(),
  restoreMs: z.number(),
  /** Wall-clock time (ms since epoch) the restored workload was running again. */
  resumedAt: z.number(),
});
export type RestoreReply = z.infer<typeof RestoreReply>;

// ---- coordinator requests ----
export const RegisterRequest = z.object({
  v: Version,
  host: HostName,
  address: z.string().max(64),
  criu: CriuInfo,
  memory: HostMemory,
  agentPid: z.number().int().positive(),
  /** Changes on every agent start, so the coordinator can tell a restart from a duplicate. */
  bootId: Id,
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const Heartbeat = z.object({
  v: Version,
  host: HostName,
  bootId: Id,
  /** Repeated from registration so a restarted coordinator learns the host from its next heartbeat. */
  address: z.string().max(64),
  criu: CriuInfo,
  seq: z.number().int().nonnegative(),
  memory: HostMemory,
  workloads: z.array(WorkloadInfo).max(100_000),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

export const CoordRunRequest = RunRequest.extend({ host: HostName });
export type CoordRunRequest = z.infer<typeof CoordRunRequest>;

export const MigrateRequest = z.object({
  v: Version,
  workload: WorkloadName,
  to: HostName,
  /** A retried request with the same id returns the first migration instead of starting another. */
  requestId: Id.optional(),
});
export type MigrateRequest = z.infer<typeof MigrateRequest>;

export const StatusRequest = z.object({ v: Version, id: Id.optional() });
export type StatusRequest = z.infer<typeof StatusRequest>;

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
