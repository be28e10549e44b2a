/**
 * Shared filesystems in this host's mount namespace: mounted before a workload starts or is
 * restored (reusing a mount already there), unmounted when no workload of ours uses them any more.
 * Workload files on them travel by path, never by content.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { MNT_DETACH, type LinuxSyscalls } from '@ferry/native';
import { ErrorCode, FerryError, type MountSpec } from '@ferry/protocol';
import { runTool } from './run-tool';

/** sshfs waits for the SSH handshake and the first SFTP round trip; a dead server fails within this. */
export const MOUNT_TIMEOUT_MS = 20_000;

export interface MountEntry {
  mountId: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Unescapes mountinfo's octal escapes (`\040` for a space). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/<pid>/mountinfo. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const f = left.split(' ');
    const r = right.split(' ');
    out.push({ mountId: Number(f[0]), mountPoint: unescapeMountinfo(f[4]), fsType: r[0], source: unescapeMountinfo(r[1]) });
  }
  return out;
}

export async function readMounts(pid: number | 'self' = 'self'): Promise<MountEntry[]> {
  return parseMountinfo(await readFile(`/proc/${pid}/mountinfo`, 'utf8'));
}

/** The mount holding `path` (the longest mount point that is a prefix; the newest wins on a tie). */
export function mountOf(mounts: MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const inside = path === m.mountPoint || path.startsWith(m.mountPoint === '/' ? '/' : `${m.mountPoint}/`);
    if (inside && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** Filesystem types whose clients keep an unlinked-but-open file alive on the server under a hidden name. */
export function isSharedFsType(fsType: string): boolean {
  return fsType === 'fuse.sshfs' || fsType === 'nfs' || fsType === 'nfs4';
}

/**
 * Names the clients give an open file that was unlinked ("silly rename"): libfuse's high-level
 * API renames it to .fuse_hidden<node><counter>, the NFS client to .nfs<fileid><counter>.
 */
export const SILLY_RENAME_PATTERN = /^\.(fuse_hidden[0-9a-f]{16}|nfs[0-9a-f]{8,})$/;

/** The program and arguments that mount `spec`; pure, so the NFS path is tested without an NFS server. */
export function mountCommand(spec: MountSpec): { file: string; args: string[] } {
  const opts = Object.entries(spec.options).map(([k, v]) => (v === '' ? k : `${k}=${v}`));
  switch (spec.type) {
    case 'sshfs':
      // allow_other: the workload may run as another user than the agent. reconnect and the
      // keepalives let a mount ride out a short network blip instead of failing every access.
      return {
        file: 'sshfs',
        args: [spec.source, spec.path, '-o', ['allow_other', 'reconnect', 'ServerAliveInterval=5', 'ServerAliveCountMax=3', ...opts].join(',')],
      };
    case 'nfs':
      return { file: 'mount', args: ['-t', 'nfs', ...(opts.length ? ['-o', opts.join(',')] : []), spec.source, spec.path] };
    case 'bind':
      return { file: 'mount', args: ['--bind', ...(opts.length ? ['-o', opts.join(',')] : []), spec.source, spec.path] };
  }
}

/** What mountinfo shows for a mount of `spec`, to recognise one that is already there. */
function matchesSpec(entry: MountEntry, spec: MountSpec): boolean {
  switch (spec.type) {
    case 'sshfs':
      return entry.fsType === 'fuse.sshfs' && entry.source === spec.source;
    case 'nfs':
      return (entry.fsType === 'nfs' || entry.fsType === 'nfs4') && entry.source === spec.source;
    case 'bind':
      // A bind mount shows the source device, not the source path; same mount point is enough.
      return true;
  }
}

export interface MountResult {
  /** false when the filesystem was already mounted there (by us earlier, or by the operator). */
  mounted: boolean;
}

/**
 * Mounts `spec` at its path unless it is already mounted there. Another filesystem at that path
 * is FAILED_PRECONDITION; a mount that fails (server unreachable, bad key) too, with its output.
 */
export async function ensureMounted(spec: MountSpec): Promise<MountResult> {
  const existing = (await readMounts()).filter((m) => m.mountPoint === spec.path);
  if (existing.length > 0) {
    const top = existing[existing.length - 1];
    if (matchesSpec(top, spec)) return { mounted: false };
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `${spec.path} already has a ${top.fsType} mount of ${top.source}, not filesystem ${spec.name} (${spec.source})`,
    );
  }
  await mkdir(spec.path, { recursive: true });
  const { file, args } = mountCommand(spec);
  await runTool(file, args, {
    timeoutMs: MOUNT_TIMEOUT_MS,
    code: ErrorCode.FAILED_PRECONDITION,
    failure: `cannot mount filesystem ${spec.name} (${spec.type} ${spec.source}) at ${spec.path}`,
  });
  return { mounted: true };
}

/** The syscall unmount() makes. */
export type UnmountSyscalls = Pick<LinuxSyscalls, 'umount2'>;

/**
 * One umount2(2), given up on after MOUNT_TIMEOUT_MS: on a dead NFS/sshfs server the kernel can
 * block it while it flushes. Its thread-pool thread stays blocked; the agent moves on.
 */
async function umount2Within(sys: UnmountSyscalls, path: string, flags: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `umount2 of ${path} did not return within ${MOUNT_TIMEOUT_MS} ms`)),
      MOUNT_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([sys.umount2(path, flags), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Unmounts `path` (lazily if busy: a frozen copy being killed may still hold files for a moment).
 * When the lazy detach fails too (e.g. `path` is not a mount point), FAILED_PRECONDITION with the
 * kernel's error as cause.
 */
export async function unmount(path: string, sys: UnmountSyscalls): Promise<void> {
  try {
    await umount2Within(sys, path, 0);
  } catch {
    try {
      await umount2Within(sys, path, MNT_DETACH);
    } catch (err) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot unmount ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
}
