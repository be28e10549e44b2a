/**
 * The workload manifest: written by the source agent next to CRIU's images, read by the target
 * to adopt the workload after its restore. It crosses hosts inside the image, so the target checks
 * it like any other message (bounded, schema-validated) before acting on it.
 */
import { z } from 'zod';
import { AbsolutePath } from './fields';
import { MountSpec, ServiceAddress, WorkloadName, WorkloadUser } from './schemas';

/** The manifest's file name in a migration's work dir. */
export const MANIFEST_FILE = 'ferry-manifest.json';
/** The largest manifest a target reads: argv and env are bounded well below this. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * An unlinked-but-open file on a shared filesystem, hard-linked to `pinPath` on the same
 * filesystem by the source, reopened by the target with the fd's flags and offset
 * (`criu restore --inherit-fd fd[N]:<key>`).
 */
export const PinnedFile = z.object({
  /** CRIU's external-file key, `file[<mnt_id hex>:<inode hex>]`. */
  key: z.string().regex(/^file\[[0-9a-f]{1,16}:[0-9a-f]{1,16}\]$/, 'not a CRIU external file key'),
  pinPath: AbsolutePath,
  flags: z.number().int().nonnegative().max(0x7fffffff),
  pos: z.number().int().nonnegative(),
});
export type PinnedFile = z.infer<typeof PinnedFile>;

export const WorkloadManifest = z.object({
  name: WorkloadName,
  argv: z.array(z.string().max(4096)).max(256),
  env: z.record(z.string().max(256), z.string().max(32 * 1024)),
  cwd: AbsolutePath,
  logPath: AbsolutePath,
  startedAt: z.string().max(64),
  /** Size of the workload's log at the dump: CRIU reopens it by path and checks the size. */
  logBytes: z.number().int().nonnegative(),
  mounts: z.array(MountSpec).max(32).default([]),
  /** Unlinked files on shared filesystems, pinned on the server, to reopen on the target. */
  pins: z.array(PinnedFile).max(1024).default([]),
  /** Its service address: the target configures it before restoring the connections bound to it. */
  address: ServiceAddress.optional(),
  /** Run as this user in its own namespaces and root: the target rebuilds that root (its own plan) for the restore. */
  user: WorkloadUser.optional(),
  /** It has its own mount namespace, root and /proc: the target rebuilds that root (its own plan) for the restore. */
  ownRoot: z.boolean().optional(),
  /** Run with --user and an address: in a network namespace of its own, which the restore recreates with a link to the target (agent host/workload-network.ts). */
  ownNetwork: z.boolean().optional(),
});
export type WorkloadManifest = z.infer<typeof WorkloadManifest>;
