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
  /** `criu check --feature uffd-noncoop`: restores can be lazy (memory filled after the tree runs). */
  lazyPages: z.boolean().default(false),
  /** criu was built with GnuTLS and openssl can issue certificates: the page server can run over mutual TLS. */
  pageServerTls: z.boolean().default(false),
  /**
   * `criu dump --lazy-pages` can serve the pages it leaves in its pipes: lazyPages, and CRIU may
   * make a 4 MiB pipe (CAP_SYS_RESOURCE, or fs.pipe-max-size at least that). Post-copy then dumps
   * without writing the memory at all.
   */
  lazyDump: z.boolean().default(false),
  /** Why it is not usable, when it is not. */
  problem: z.string().max(4096).optional(),
});
export type CriuInfo = z.infer<typeof CriuInfo>;

/**
 * A shared filesystem as cluster configuration names it. `source` and `options` go to the mount
 * program as they are (sshfs `-o K=V`, `mount -t nfs -o K=V`); `bind` bind-mounts a host path.
 */
export const FilesystemSpec = z.object({
  name: Id,
  type: z.enum(['sshfs', 'nfs', 'bind']),
  source: z.string().min(1).max(4096).refine((s) => !s.startsWith('-') && !s.includes('\0'), 'must not start with - or contain NUL'),
  options: z
    .record(
      z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, 'option names are letters, digits, _ . -'),
      z.string().max(4096).refine((v) => !/[,\0\n]/.test(v), 'option values must not contain commas, NUL or newlines'),
    )
    .default({}),
});
export type FilesystemSpec = z.infer<typeof FilesystemSpec>;

/** A filesystem mounted at `path` for a workload (the same path on every host it runs on). */
export const MountSpec = FilesystemSpec.extend({ path: AbsolutePath });
export type MountSpec = z.infer<typeof MountSpec>;

/**
 * A workload's own IPv4 service address, `A.B.C.D/NN`: configured on its host's interface while it
 * runs there and moved with it on migration, so its TCP connections survive (CRIU's TCP repair).
 */
export const ServiceAddress = z
  .string()
  .max(18)
  .refine((s) => {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
    if (!m) return false;
    const octets = m.slice(1, 5).map(Number);
    const prefix = Number(m[5]);
    return octets.every((o) => o <= 255) && octets[0] !== 0 && octets[0] !== 127 && octets[0] < 224 && prefix >= 8 && prefix <= 32;
  }, 'a service address is an IPv4 unicast address with a prefix length, e.g. 198.18.0.100/24');
export type ServiceAddress = z.infer<typeof ServiceAddress>;

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
  /** Shared filesystems the workload uses; a target mounts them before a restore. */
  mounts: z.array(MountSpec).max(32).default([]),
  /** Its own service address (`ferry run --address`), which moves with it. */
  address: ServiceAddress.optional(),
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

/**
 * The image's data path: ferry's chunk stream through nats-server (`nats`) or over TCP between the
 * agents (`direct`), or `page-server`: memory pages over CRIU's own page-server connection from the
 * source's `criu dump` to a `criu page-server` on the target, the other images by ferry's stream.
 */
export const Transport = z.enum(['nats', 'direct', 'page-server']);
export type Transport = z.infer<typeof Transport>;
/**
 * What a migration asks for: `auto` takes direct when the hosts reach each other, else NATS;
 * `page-server` needs the source to reach the target over TCP (no fallback: the dump fails).
 */
export const TransportPreference = z.enum(['auto', 'direct', 'nats', 'page-server']);
export type TransportPreference = z.infer<typeof TransportPreference>;

/** How the target restores: all memory first (eager), or running first, memory filled behind (lazy). */
/**
 * eager: all memory in place before the workload runs. lazy: the workload runs once the image has
 * arrived, its memory filled behind it from the received images. post-copy: the workload runs on
 * the target once everything but its lazy memory has arrived; that memory stays on the source and
 * is fetched as the workload touches it and in the background (see docs/performance.md).
 */
export const RestoreMode = z.enum(['eager', 'lazy', 'post-copy']);
export type RestoreMode = z.infer<typeof RestoreMode>;

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
  /** How the image travelled: through nats-server, or over a TCP connection between the agents. */
  transport: Transport,
  /** Absent in records from before restore modes existed (they were eager). */
  restore: RestoreMode.optional(),
  phases: z.object({
    dumpMs: z.number().nonnegative(),
    transferMs: z.number().nonnegative(),
    restoreMs: z.number().nonnegative(),
    /** Lazy and post-copy restores: from the resume until the last page was in place (the workload running meanwhile). */
    pullMs: z.number().nonnegative().optional(),
  }),
  /** Pid on the target after success. */
  pid: z.number().int().nullable(),
  error: ErrorBodySchema.nullable(),
  history: z.array(z.object({ step: MigrationStep, at: z.string() })).max(100),
  /** Set when the coordinator chose the target (no `to` in the request): which host and why. */
  placement: z.object({ host: HostName, reason: z.string().max(4096) }).nullable().optional(),
});
export type MigrationResult = z.infer<typeof MigrationResult>;

// ---- agent requests ----
export const RunRequest = z.object({
  v: Version,
  name: WorkloadName,
  argv: z.array(z.string().max(4096)).min(1).max(256),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).max(256), z.string().max(32 * 1024)).default({}),
  cwd: AbsolutePath.optional(),
  mounts: z.array(MountSpec).max(32).default([]),
  /** A service address to configure on the host for it (see ServiceAddress). */
  address: ServiceAddress.optional(),
});
export type RunRequest = z.infer<typeof RunRequest>;

export const NameRequest = z.object({ v: Version, name: WorkloadName });
export type NameRequest = z.infer<typeof NameRequest>;

export const EmptyRequest = z.object({ v: Version });

/**
 * A per-migration image key (32 bytes, msgpack bin). Generated by the coordinator, sent only in
 * receive/checkpoint requests, kept only in memory (never in Redis, events or logs).
 */
export const ImageKey = z.instanceof(Uint8Array).refine((k) => k.byteLength === 32, 'an image key is 32 bytes');

export const ReceiveRequest = z.object({
  v: Version,
  migrationId: Id,
  transferId: Id,
  workload: WorkloadName,
  source: HostName,
  /** The target abandons the transfer when nothing arrives for this long. */
  idleTimeoutMs: z.number().int().positive().max(600_000),
  /** ...and when the first frame takes longer than this (the dump comes first and grows with memory); default idleTimeoutMs. */
  firstFrameTimeoutMs: z.number().int().positive().max(86_400_000).optional(),
  /** Mounted (unless already there) before anything is frozen: a failure here changes nothing. */
  mounts: z.array(MountSpec).max(32).default([]),
  /** Start a `criu page-server` for the source's dump to send the memory pages to. */
  pageServer: z.boolean().default(false),
  /** Run that page server over mutual TLS with per-migration certificates (both hosts' probes allow it). */
  pageServerTls: z.boolean().default(false),
  /** Per-migration AES-256-GCM key; every image frame must come sealed with it (transfer chunk-cipher.ts). */
  imageKey: ImageKey.optional(),
});
export type ReceiveRequest = z.infer<typeof ReceiveRequest>;

/** One PEM document (a certificate or an EC key), bounded. */
const Pem = z.string().min(1).max(8192).refine((t) => t.startsWith('-----BEGIN '), 'not PEM');

/**
 * The client side of a page server's mutual TLS: the per-migration CA's certificate, and the
 * certificate and key the source's `criu dump` presents. Travels only in the receive reply and
 * the checkpoint request, never into Redis, events or logs (like the image key).
 */
export const PageServerTls = z.object({ caCert: Pem, cert: Pem, key: Pem });
export type PageServerTls = z.infer<typeof PageServerTls>;

/** Where a target's `criu page-server` listens, and with `tls` how to connect to it. */
export const PageServerEndpoint = z.object({
  address: z.string().min(1).max(64),
  port: z.number().int().min(1).max(65_535),
  tls: PageServerTls.optional(),
});
export type PageServerEndpoint = z.infer<typeof PageServerEndpoint>;

export const ReceiveReply = z.object({ pageServer: PageServerEndpoint.optional() });
export type ReceiveReply = z.infer<typeof ReceiveReply>;

export const CheckpointRequest = z.object({
  v: Version,
  migrationId: Id,
  transferId: Id,
  workload: WorkloadName,
  target: HostName,
  idleTimeoutMs: z.number().int().positive().max(600_000),
  /** Which data path to use: direct TCP, NATS, or direct when reachable else NATS. */
  transport: TransportPreference.default('auto'),
  /** With transport page-server: the target's page server, from its receive reply. */
  pageServer: PageServerEndpoint.optional(),
  /** Per-migration AES-256-GCM key the image frames are sealed with (the target got the same one). */
  imageKey: ImageKey.optional(),
  /**
   * Post-copy: keep the workload's lazy memory here and send only the rest; serve the lazy pages
   * to the target on request until the migration is released or rolled back.
   */
  postCopy: z.boolean().default(false),
});
export type CheckpointRequest = z.infer<typeof CheckpointRequest>;

export const CheckpointReply = z.object({
  dumpMs: z.number(),
  transferMs: z.number(),
  /** Image bytes moved: ferry's stream, plus the memory pages a page server received during the dump. */
  bytes: z.number().int().nonnegative(),
  files: z.number().int().nonnegative(),
  /** Wall-clock time (ms since epoch) the workload was frozen; downtime is measured from it. */
  frozenAt: z.number(),
  transport: Transport.default('nats'),
  /** Post-copy: memory bytes left on the source for the target to fetch. */
  lazyBytes: z.number().int().nonnegative().default(0),
  /**
   * Post-copy by CRIU's lazy dump, the hosts reaching each other: its page server, for the target's
   * `criu lazy-pages` to connect to straight, with the client's TLS credentials. Absent: the target
   * asks the source agent over NATS.
   */
  lazyPageServer: PageServerEndpoint.optional(),
});
export type CheckpointReply = z.infer<typeof CheckpointReply>;

export const MigrationRef = z.object({ v: Version, migrationId: Id, workload: WorkloadName });
export type MigrationRef = z.infer<typeof MigrationRef>;

export const RestoreRequest = MigrationRef.extend({
  /**
   * Restore with `criu restore --lazy-pages` and a `criu lazy-pages` daemon serving the memory from
   * the received images: the workload runs again before its memory is all in place. The reply
   * still waits for the last page (the source keeps its frozen copy until then).
   */
  lazyPages: z.boolean().default(false),
  /** Post-copy (implies lazyPages): the lazy memory is fetched from the source, which still holds it. */
  postCopy: z.boolean().default(false),
  /** Post-copy: the source's CRIU page server to fetch from directly (CheckpointReply.lazyPageServer). */
  lazyPageServer: PageServerEndpoint.optional(),
});
export type RestoreRequest = z.infer<typeof RestoreRequest>;

export const RestoreReply = z.object({
  pid: z.number().int().positive(),
  restoreMs: z.number(),
  /** Wall-clock time (ms since epoch) the restored workload was running again. */
  resumedAt: z.number(),
  /** Memory-page bytes a page server received for this restore (page-server transport) or fetched after the resume (post-copy), else 0. */
  pageBytes: z.number().int().nonnegative().default(0),
  /** Lazy restores: ms from the resume until every page was in place. */
  pullMs: z.number().nonnegative().default(0),
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

// ---- pre-flight, reconciliation, drain ----
/** `criu cpuinfo dump` output is ~100 bytes; the bound only keeps a peer honest. */
const MAX_CPUINFO_IMAGE_BYTES = 64 * 1024;

export const CpuinfoReply = z.object({ image: z.instanceof(Uint8Array).refine((b) => b.byteLength <= MAX_CPUINFO_IMAGE_BYTES, 'cpuinfo image too large') });
export type CpuinfoReply = z.infer<typeof CpuinfoReply>;

export const CpuinfoCheckRequest = z.object({
  v: Version,
  /** Which host the image came from, for the error message. */
  source: HostName,
  image: z.instanceof(Uint8Array).refine((b) => b.byteLength <= MAX_CPUINFO_IMAGE_BYTES, 'cpuinfo image too large'),
});
export type CpuinfoCheckRequest = z.infer<typeof CpuinfoCheckRequest>;

export const CpuinfoCheckReply = z.object({
  compatible: z.boolean(),
  /** CRIU's error lines when not compatible. */
  problem: z.string().max(64 * 1024).optional(),
});
export type CpuinfoCheckReply = z.infer<typeof CpuinfoCheckReply>;

/** An agent's own record of one migration: what it froze (source) or restored (target). */
export const MigrationRecordReply = z.object({
  /** The inventory carries a workload of that name marked with this migration. */
  role: z.enum(['source', 'target']).nullable(),
  /** State of that workload in the inventory (null: no such workload here). */
  workloadState: WorkloadState.nullable(),
  /** Its root process is alive. */
  alive: z.boolean(),
  /** Its root pid (machine PID namespace), when there is such a workload. */
  pid: z.number().int().nonnegative().nullable(),
  /** Target only: the image is being received or restored right now. */
  inProgress: z.enum(['receiving', 'restoring']).nullable(),
});
export type MigrationRecordReply = z.infer<typeof MigrationRecordReply>;

export const HostRequest = z.object({ v: Version, host: HostName });
export type HostRequest = z.infer<typeof HostRequest>;

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
