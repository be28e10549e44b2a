/**
 * Every workload's own root: a mount namespace with its own /proc (its PID namespace's: `ps` inside
 * lists only its own processes), /dev/shm and /run, and a read-only root directory made of the
 * host's directories.
 * Workloads run as another user (`ferry run --user`) also get a user namespace the agent's root
 * owns; the others (run as root) keep the host's user namespace, so CRIU still puts their TCP
 * connections in repair mode and serves their memory through userfaultfd. `ferry run --host-root`
 * opts out: the workload shares the agent's mount namespace and sees the host's /proc.
 *
 * Why a user namespace for another user: CRIU reads a task's resource limits with prlimit(2),
 * which needs CAP_SYS_RESOURCE over a task of another user. Root lacks it on some machine kinds (DESIGN.md), so no non-root process
 * could be dumped there. In a user namespace whose owner is the agent's uid, the agent (and CRIU)
 * hold every capability over its tasks, whatever their own set. A task in a child user namespace
 * must then see a /proc of its own PID namespace (CRIU's parasite refuses an unprivileged task
 * whose /proc is not its own), so it gets a mount namespace with its own /proc, which also means
 * `ps` inside shows only the workload's processes.
 *
 * The mount namespace is small and alike on every host, so CRIU can rebuild it anywhere: a root
 * directory the agent makes (a skeleton of empty mount points and the host's top-level symlinks),
 * bind mounts of host paths at the same paths (each top-level directory of the host but the
 * kernel's and /run, HOST_ONLY_TOP_DIRS; the workload's cluster filesystems; the device nodes; the
 * workload's log file), a fresh /proc, /dev/shm and /run. The binds are not recursive: a mount
 * below a top-level directory stays out unless it is one of the workload's cluster filesystems.
 * Every bind mount is an external mount for CRIU with a cookie derived from its path; the target derives the same list itself, maps each
 * cookie to its own host path and gives CRIU its own skeleton as --root. The image can therefore
 * bind nothing the target did not choose: a cookie the target does not know fails the restore.
 *
 * uids map 1:1 (0..2^32-2 onto themselves): files keep their owners on the host's disks, and the
 * program runs as the given user; the namespace only adds the capabilities CRIU needs from outside.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { ErrorCode, FerryError, type WorkloadUser } from '@ferry/protocol';
import { runTool } from './run-tool';

/**
 * Top-level directories of the host a workload's own root does not bind: the kernel's (its own /proc
 * is mounted fresh; /sys and /dev stay out, but for the device nodes below) and /run, the host's
 * runtime state (the agent's work dirs, sockets of the host's daemons).
 */
export const HOST_ONLY_TOP_DIRS = ['/proc', '/sys', '/dev', '/run', '/lost+found'];
/**
 * The directories a root in a user namespace of its own (`--user`) binds, of those the host has:
 * there the host's mounts are locked to their submounts, and a plain bind of a directory with a
 * mount below it (this machine's /mnt) fails with EINVAL, so only these usual ones are bound.
 */
export const USER_ROOT_DIRS = ['/usr', '/etc', '/var', '/opt', '/srv', '/home', '/tmp', '/root'];
/** Device nodes it gets (bind mounts of the host's). */
export const ISOLATED_ROOT_DEVICES = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom'];
/**
 * Mounts made fresh inside (not binds): CRIU dumps their contents with the namespace (a tmpfs's
 * files go into the image), so what a program keeps in /dev/shm or /run (a pid file, a socket)
 * moves with it.
 */
export const ISOLATED_ROOT_OWN_MOUNTS = ['/proc', '/dev/shm', '/run'];
/**
 * Established TCP connections of a workload in a user namespace of its own but the host's network
 * namespace are restored closed: putting a socket in repair mode needs CAP_NET_ADMIN over its
 * network namespace, the host's, and the restored tasks sit in their own user namespace (tried:
 * "Can't turn TCP repair mode ON: Operation not permitted"). Such a workload has no service address
 * (with one it gets a network namespace of its own, where they move: workload-network.ts), so the
 * pre-flight already refused any connection it holds (tcp-sockets.ts); these close one made since.
 */
export const ISOLATED_ROOT_TCP_ARGS = ['--tcp-close'];
/**
 * The dump also skips connections still in a listening socket's queue (nothing locks the network
 * without repair mode, so a client may be connecting as it freezes): they are not on the target,
 * and their client's next packet gets a reset there, so it connects again.
 */
export const ISOLATED_ROOT_TCP_DUMP_ARGS = [...ISOLATED_ROOT_TCP_ARGS, '--skip-in-flight'];
/** uid_map / gid_map line: every id onto itself (the kernel's largest range). */
export const IDENTITY_ID_MAP = '0 0 4294967295\n';

/** The bind mounts of one isolated workload: every one an external mount for CRIU. */
export interface IsolatedRootPlan {
  /** The skeleton directory that becomes the workload's `/` (and CRIU's --root on a restore). */
  rootDir: string;
  /** Host paths bound at the same path inside: directories first, then files (devices, the log). */
  binds: Array<{ path: string; kind: 'dir' | 'file' }>;
}

/** The cookie CRIU records for the external mount at `path` (letters and digits only, as its parser wants). */
export function mountCookie(path: string): string {
  return `ferry${createHash('sha256').update(path).digest('hex').slice(0, 24)}`;
}

/**
 * This host's top-level directories a workload's own root binds (symlinks among them are copied,
 * not bound); for a workload in its own user namespace, those of USER_ROOT_DIRS.
 */
export async function hostRootDirs({ userNamespace = false }: { userNamespace?: boolean } = {}): Promise<string[]> {
  const dirs: string[] = [];
  for (const entry of (await readdir('/')).sort()) {
    const path = `/${entry}`;
    if (HOST_ONLY_TOP_DIRS.includes(path) || (userNamespace && !USER_ROOT_DIRS.includes(path))) continue;
    if ((await lstat(path).catch(() => null))?.isDirectory()) dirs.push(path);
  }
  return dirs;
}

/**
 * The plan for a workload whose log is `logPath`, rooted at `rootDir`, using the cluster
 * filesystems mounted at `mounts`, in a user namespace of its own or not: this host's top-level
 * directories (hostRootDirs), then the mounts (outer ones first), the devices and the log.
 */
export async function isolatedRootPlan(
  rootDir: string,
  logPath: string,
  { mounts = [], userNamespace = false }: { mounts?: readonly string[]; userNamespace?: boolean } = {},
): Promise<IsolatedRootPlan> {
  const binds: IsolatedRootPlan['binds'] = (await hostRootDirs({ userNamespace })).map((path) => ({ path, kind: 'dir' as const }));
  const depth = (p: string) => p.split('/').length;
  for (const path of [...new Set(mounts.map((m) => normalize(m)))].sort((a, b) => depth(a) - depth(b) || a.localeCompare(b))) {
    if (path !== '/' && !binds.some((b) => b.path === path)) binds.push({ path, kind: 'dir' });
  }
  for (const dev of ISOLATED_ROOT_DEVICES) {
    if (await lstat(dev).catch(() => null)) binds.push({ path: dev, kind: 'file' });
  }
  binds.push({ path: logPath, kind: 'file' });
  return { rootDir, binds };
}

/** Whether `cwd` is visible inside an own root (under one of its directories). */
export function visibleInIsolatedRoot(plan: IsolatedRootPlan, cwd: string): boolean {
  const p = normalize(cwd);
  return p === '/' || plan.binds.some((b) => b.kind === 'dir' && (p === b.path || p.startsWith(`${b.path}/`)));
}

/**
 * Makes the skeleton: an empty mount point for each bind, /proc, /dev/shm, /run, the host's
 * top-level symlinks (/bin -> usr/bin on merged-/usr systems) and /dev's fd links. Made afresh.
 */
export async function makeRootSkeleton(plan: IsolatedRootPlan): Promise<void> {
  const { rootDir } = plan;
  await removeRootSkeleton(rootDir);
  await mkdir(rootDir, { recursive: true, mode: 0o755 });
  for (const d of ['proc', 'dev', 'dev/shm', 'run', 'sys', '.ferry-old']) await mkdir(join(rootDir, d), { recursive: true, mode: 0o755 });
  for (const b of plan.binds) {
    const at = join(rootDir, b.path);
    if (b.kind === 'dir') await mkdir(at, { recursive: true, mode: 0o755 });
    else {
      await mkdir(dirname(at), { recursive: true, mode: 0o755 });
      await writeFile(at, '', { mode: 0o644 });
    }
  }
  for (const entry of await readdir('/')) {
    const st = await lstat(join('/', entry)).catch(() => null);
    if (!st?.isSymbolicLink()) continue;
    const target = await readlink(join('/', entry));
    await symlink(target, join(rootDir, entry)).catch(() => undefined);
  }
  for (const [name, target] of [['fd', '/proc/self/fd'], ['stdin', '/proc/self/fd/0'], ['stdout', '/proc/self/fd/1'], ['stderr', '/proc/self/fd/2']]) {
    await symlink(target!, join(rootDir, 'dev', name!)).catch(() => undefined);
  }
}

/** Removes a skeleton (its mount points are only mounted inside the workload's namespace, gone with it). */
export async function removeRootSkeleton(rootDir: string): Promise<void> {
  await rm(rootDir, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * Runs in the workload's new mount, PID and IPC namespaces (and user namespace, for another user)
 * as their root, before the program: waits for the agent to write the id maps (in the host's user
 * namespace they are there already), builds the root from the skeleton and the binds, enters it,
 * and execs the program, a session leader, as the user when UID is not empty. Arguments, never
 * interpolated:
 *   ROOT LOG CWD UID GID NBINDS BIND... PROGRAM ARG...
 */
export const ISOLATED_ROOT_SCRIPT = [
  'set -e',
  'root=$1 log=$2 cwd=$3 uid=$4 gid=$5 n=$6; shift 6',
  'binds=("${@:1:n}"); shift "$n"',
  // Until the agent writes our maps we are nobody here, without the right to mount anything.
  'until [ -n "$(cat /proc/self/uid_map)" ]; do sleep 0.005; done',
  'mount --make-rprivate /',
  'mount --bind "$root" "$root"',
  // Its own /run (pid files, sockets, /var/run): moved with it, unlike the skeleton under it.
  // First, so that a bind below it (the dev cluster keeps logs under /run) lands on top of it,
  // on a mount point made in it.
  'mount -t tmpfs -o mode=0755,size=64m run "$root/run"',
  'for b in "${binds[@]}"; do',
  '  case "$b" in /run/*) if [ -d "$b" ]; then mkdir -p "$root$b"; else mkdir -p "$(dirname "$root$b")"; : >"$root$b"; fi ;; esac',
  '  mount --bind "$b" "$root$b"',
  'done',
  'cd "$root"',
  'pivot_root . .ferry-old',
  'mount -t proc proc /proc',
  'mount -t tmpfs -o mode=1777,size=64m shm /dev/shm',
  'umount -l /.ferry-old',
  'rmdir /.ferry-old',
  // The skeleton itself read-only: what a program wrote there would not move (the target makes its
  // own skeleton), so it fails at once (EROFS) instead of vanishing at a migration.
  'mount -o remount,bind,ro /',
  'cd "$cwd"',
  // stdio opened inside: a descriptor from outside this mount namespace cannot be restored.
  'exec </dev/null >>"$log" 2>&1',
  'if [ -z "$uid" ]; then exec /usr/bin/setsid -- "$@"; fi',
  'exec /usr/bin/setsid -- /usr/bin/setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"',
].join('\n');

/** The arguments ISOLATED_ROOT_SCRIPT takes before the program. */
export function isolatedRootScriptArgs(plan: IsolatedRootPlan, logPath: string, cwd: string, user: WorkloadUser | undefined): string[] {
  return [plan.rootDir, logPath, cwd, user ? String(user.uid) : '', user ? String(user.gid) : '', String(plan.binds.length), ...plan.binds.map((b) => b.path)];
}

/**
 * `--external mnt[PATH]:COOKIE` for each mount of the workload's namespace but its root and /proc
 * and /dev/shm (which CRIU dumps itself), as /proc/PID/mountinfo lists them; FAILED_PRECONDITION
 * (before anything is frozen: the pre-flight calls it too) for a mount the plan does not have.
 */
export function criuDumpExternals(mountinfo: string, plan: IsolatedRootPlan): string[] {
  const allowed = new Set(plan.binds.map((b) => b.path));
  const seen = new Set<string>();
  const args: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mountPoint = unescapeMountinfo(fields[4]!);
    if (mountPoint === '/' || ISOLATED_ROOT_OWN_MOUNTS.includes(mountPoint)) continue;
    // A second mount at one of ferry's mount points is the workload's own, over ferry's (a workload
    // run as root may mount): taken for ferry's bind, the target would bind the host's path there.
    if (!allowed.has(mountPoint) || seen.has(mountPoint)) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the workload mounted ${mountPoint} in its own mount namespace: only ferry's own mounts can be rebuilt on another host`);
    }
    seen.add(mountPoint);
    args.push('--external', `mnt[${mountPoint}]:${mountCookie(mountPoint)}`);
  }
  return args;
}

/**
 * The host's top-level directories bound in a workload's own root, as its /proc/PID/mountinfo
 * lists them (what it started with, whatever the host has now), less its cluster filesystems
 * (`mounts`: the target mounts those itself). The target binds its own at the same paths.
 */
export function rootBindDirs(mountinfo: string, mounts: readonly string[]): string[] {
  const dirs = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mountPoint = unescapeMountinfo(fields[4]!);
    if (/^\/[^/]+$/.test(mountPoint) && !ISOLATED_ROOT_OWN_MOUNTS.includes(mountPoint) && !mounts.includes(mountPoint)) dirs.add(mountPoint);
  }
  return [...dirs].sort();
}

/** A restore's CRIU arguments: its skeleton as the root, each cookie mapped to this host's own path. */
export function criuRestoreRootArgs(plan: IsolatedRootPlan): string[] {
  return ['--root', plan.rootDir, ...plan.binds.flatMap((b) => ['--external', `mnt[${mountCookie(b.path)}]:${b.path}`])];
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** USER[:GROUP] as names; resolved on this host (getent), so the ids are this host's. */
const USER_SPEC = /^([a-z_][a-z0-9_-]{0,31})(?::([a-z_][a-z0-9_-]{0,31}))?$/;

/** The uid and gid of `spec` (USER[:GROUP]) on this host; INVALID_ARGUMENT for an unknown name. */
export async function resolveWorkloadUser(spec: string): Promise<WorkloadUser> {
  const m = USER_SPEC.exec(spec);
  if (!m) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--user ${JSON.stringify(spec)}: expected USER or USER:GROUP (names)`);
  const passwd = await getent('passwd', m[1]!);
  if (!passwd) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--user: no user ${m[1]} on this host`);
  const [, , uidText, gidText] = passwd.split(':');
  let gid = Number(gidText);
  if (m[2] !== undefined) {
    const group = await getent('group', m[2]);
    if (!group) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--user: no group ${m[2]} on this host`);
    gid = Number(group.split(':')[2]);
  }
  return { name: m[1]!, uid: Number(uidText), gid };
}

async function getent(db: 'passwd' | 'group', name: string): Promise<string | null> {
  try {
    const out = await runTool('getent', [db, name], { timeoutMs: 5_000, code: ErrorCode.INVALID_ARGUMENT, failure: `getent ${db} ${name} failed` });
    const line = out.split('\n')[0] ?? '';
    return line.startsWith(`${name}:`) ? line : null;
  } catch {
    return null;
  }
}
