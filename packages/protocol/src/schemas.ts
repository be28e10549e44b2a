/**
 * The vocabulary both sides' messages share: names, workloads, hosts, migrations, and the generic
 * requests and replies. Every message crossing NATS is checked against a schema on receipt;
 * anything else is answered with INVALID_ARGUMENT. Sizes are bounded so a hostile peer cannot
 * make a receiver allocate without limit. Agent verbs' messages are in agent-messages.ts, the
 * coordinator's in coordinator-messages.ts, and which verb takes which in verbs.ts.
 */
import { z } from 'zod';
import { AbsolutePath, Version } from './fields';

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const HostName = z.string().regex(TOKEN, 'host names are lowercase letters, digits, - and _ (at most 63)');
export const WorkloadName = z.string().regex(TOKEN, 'workload names are lowercase letters, digits, - and _ (at most 63)');
export const Id = z.string().regex(TOKEN, 'ids are lowercase letters, digits, - and _ (at most 63)');

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
  /**
   * CRIU takes an already connected page-server socket (`--ps-socket`) and this agent can seal a
   * byte stream natively (its addon's sealed pump): the memory can take ferry's page tunnel.
   */
  pageTunnel: z.boolean().default(false),
  /**
   * A throwaway holding unread data in a FIFO survived dump + restore. CRIU 4.2.1 refills pipes
   * with vmsplice(SPLICE_F_GIFT), which newer kernels refuse (EOPNOTSUPP, CRIU PR #3077); where
   * this is false, a workload whose pipes hold data cannot be restored here and is refused before
   * the freeze.
   */
  pipeData: z.boolean().default(false),
  /**
   * `criu dump --stream` works with this agent as its image streamer (a throwaway dumped that way
   * and restored) and the agent can seal a pipe natively: the memory can go on the wire while CRIU
   * dumps (memory path `stream`).
   */
  stream: z.boolean().default(false),
  /**
   * This agent can pre-copy a workload's memory while it runs and send only what changed at the
   * freeze (@ferry/native's precopyRead and dedupPages), and rebuild pages from such a delta as a
   * target (agent migration/memory-precopy.ts). Off with FERRY_PRECOPY=off.
   */
  memoryPrecopy: z.boolean().default(false),
  /**
   * The kernel lets a task without CAP_SYS_PTRACE make a userfaultfd (vm.unprivileged_userfaultfd=1).
   * A `--user` workload restores in its own user namespace, where CRIU's restorer makes the
   * userfaultfd: only then can it restore lazily (and by post-copy) here.
   */
  unprivilegedUserfaultfd: z.boolean().default(false),
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

/**
 * A host-local directory that belongs to a workload and moves with it (`ferry run --local-dir`):
 * absolute, normalized (no `.`, `..`, `//` or trailing `/`), not `/` itself. Which roots a host
 * allows (FERRY_LOCAL_DIR_ROOTS, default /srv) each agent checks against its own configuration.
 */
export const LocalDir = z
  .string()
  .max(1024)
  .refine(
    (p) => p.startsWith('/') && p.length > 1 && !p.endsWith('/') && !p.includes('\0') && p.slice(1).split('/').every((s) => s !== '' && s !== '.' && s !== '..'),
    'a local dir is an absolute, normalized path other than /',
  );
export type LocalDir = z.infer<typeof LocalDir>;

export const WorkloadState = z.enum(['running', 'frozen', 'exited']);
export type WorkloadState = z.infer<typeof WorkloadState>;

/**
 * The user a workload runs as (`ferry run --user`), resolved by name on the host that started it.
 * Such a workload lives in its own user, mount and PID namespaces (agent host/isolated-root.ts).
 */
export const WorkloadUser = z.object({
  name: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/),
  uid: z.number().int().min(0).max(4_294_967_294),
  gid: z.number().int().min(0).max(4_294_967_294),
});
export type WorkloadUser = z.infer<typeof WorkloadUser>;

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
  /** Host-local directories that belong to it and move with it (`ferry run --local-dir`). */
  localDirs: z.array(LocalDir).max(16).default([]),
  /** Set for a workload run as another user (`ferry run --user`), in its own namespaces and root. */
  user: WorkloadUser.optional(),
  /** It has its own mount namespace, root and /proc (every workload but one run with `--host-root`). */
  ownRoot: z.boolean().optional(),
  /** It has a network namespace of its own, its service address in it (one run with `--user` and `--address`). */
  ownNetwork: z.boolean().optional(),
});
export type WorkloadInfo = z.infer<typeof WorkloadInfo>;

/**
 * Largest memory a host may report (4 PiB): far above any machine, far below where a double stops
 * counting bytes exactly. An agent's report feeds placement, so it is bounded and self-consistent:
 * a host claiming more free memory than it has, or absurd amounts, to attract workloads is refused.
 */
export const MAX_HOST_MEMORY_BYTES = 2 ** 52;
export const HostMemory = z
  .object({
    totalBytes: z.number().int().nonnegative().max(MAX_HOST_MEMORY_BYTES),
    availableBytes: z.number().int().nonnegative().max(MAX_HOST_MEMORY_BYTES),
  })
  .refine((m) => m.availableBytes <= m.totalBytes, 'a host cannot have more memory available than it has');

export const HostInfo = z.object({
  name: HostName,
  state: z.enum(['alive', 'lost']),
  cordoned: z.boolean(),
  address: z.string().max(64),
  criu: CriuInfo,
  memory: HostMemory,
  workloadCount: z.number().int().nonnegative(),
  lastHeartbeatAt: z.string().max(64),
  /** The host's agent as it registered: a new id on every start, so a restarted (or crashed and restarted) agent shows. */
  bootId: Id.optional(),
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
 * agents (`direct`); `page-server`: memory pages over CRIU's own page-server connection (mutual
 * TLS) from the source's `criu dump` to a `criu page-server` on the target; `page-tunnel`: the same
 * CRIU page-server protocol carried by ferry's page tunnel (CRIU on each end talks to its own
 * agent over a socket pair, the agents seal the stream natively with the migration's key and move
 * it over one TCP connection). With either page path the other images take ferry's stream.
 */
export const Transport = z.enum(['nats', 'direct', 'page-server', 'page-tunnel']);
export type Transport = z.infer<typeof Transport>;
/**
 * What a migration asks for: `auto` takes direct when the hosts reach each other, else NATS;
 * `page-server` needs the source to reach the target over TCP (no fallback: the dump fails).
 */
export const TransportPreference = z.enum(['auto', 'direct', 'nats', 'page-server', 'page-tunnel']);
export type TransportPreference = z.infer<typeof TransportPreference>;
/**
 * How a frozen workload's memory leaves the source (the coordinator decides; the agent's
 * migration/source-data-paths.ts carries it out): `image`, in the dumped image through ferry's
 * stream; `page-server`, by CRIU's dump to the target's `criu page-server` while it dumps;
 * `page-tunnel`, the same through ferry's page tunnel (see Transport); `stream`, by `criu dump
 * --stream` through the source agent, whose sealed pump puts the pages on ferry's direct stream
 * while CRIU dumps (written to disk first only when the stream falls back to NATS);
 * `lazy-dump` (post-copy), kept in `criu dump --lazy-pages`'s pipes and served from there;
 * `lazy-rewrite` (post-copy where CRIU cannot lazy-dump), a full dump whose lazy pages this
 * agent serves.
 */
export const MemoryPath = z.enum(['image', 'stream', 'page-server', 'page-tunnel', 'lazy-dump', 'lazy-rewrite']);
export type MemoryPath = z.infer<typeof MemoryPath>;

/**
 * The path of ferry's own image stream (@ferry/transfer): `auto` takes direct when the receiver
 * offers a reachable endpoint, else NATS. `page-server` is no stream path: with it the memory
 * pages go over CRIU's connection and the other images still take one of these.
 */
export const StreamTransport = TransportPreference.exclude(['page-server', 'page-tunnel']);
export type StreamTransport = z.infer<typeof StreamTransport>;

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
  /** Of them, what memory pre-copy moved while the workload ran (absent: no pre-copy); the rest crossed while it was frozen. */
  precopyBytes: z.number().int().nonnegative().optional(),
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
    /** Workloads with local dirs: their first pass, the workload still running (`ferry run --local-dir`). */
    localDirMs: z.number().nonnegative().optional(),
    /** Memory pre-copy: its pass, the workload still running (the freeze then sent only what changed). */
    precopyMs: z.number().nonnegative().optional(),
  }),
  /** Pid on the target after success. */
  pid: z.number().int().nullable(),
  error: ErrorBodySchema.nullable(),
  history: z.array(z.object({ step: MigrationStep, at: z.string() })).max(100),
  /** Set when the coordinator chose the target (no `to` in the request): which host and why. */
  placement: z.object({ host: HostName, reason: z.string().max(4096) }).nullable().optional(),
  /** The data path the request asked for (absent in records from before it was kept: auto). */
  transportPreference: TransportPreference.optional(),
  /** `ferry migrate --precopy` as asked (absent: auto). */
  precopyPreference: z.enum(['auto', 'off']).optional(),
  /** How the memory left the source, as planned from both probes (`stream`: while CRIU dumped). Absent before it is planned. */
  memory: MemoryPath.optional(),
  /** The workload's local dirs that moved with it (`ferry run --local-dir`); absent: none. */
  localDirs: z.array(LocalDir).max(16).optional(),
});
export type MigrationResult = z.infer<typeof MigrationResult>;

// ---- generic requests and replies ----
export const NameRequest = z.object({ v: Version, name: WorkloadName });
export type NameRequest = z.infer<typeof NameRequest>;

export const EmptyRequest = z.object({ v: Version });

/**
 * The reply of a verb that answers only "done". An object and nothing more: fields a newer peer
 * might add are dropped, as every reply schema drops undeclared fields, so no caller can come to
 * depend on them.
 */
export const EmptyReply = z.object({});
export type EmptyReply = z.infer<typeof EmptyReply>;
