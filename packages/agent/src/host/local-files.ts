/**
 * Regular files a workload holds open (fds and file mappings) on this host's own disks, and
 * whether another host has the same files.
 *
 * CRIU does not carry the content of a file that still has a name: the restore reopens it by path
 * on the target and, by default, checks only its size. A file on this host's local disk that the
 * target lacks fails the restore after the freeze, and one the target has with the same size but
 * other bytes (another build of a library, another version of a data file) restores silently wrong.
 * So before anything is frozen, the source lists such files with their identity (size, mtime,
 * sha256) and the target compares its own (`check-files`). A file the workload writes while it is
 * read has no stable content: it matches only on a host that sees that very file (the same kernel
 * boot id, device and inode: the dev cluster's hosts share one machine and, outside /srv, its
 * filesystem); anywhere else it is refused as being written, to be declared with --local-dir.
 *
 * Not listed: what moves or is reached another way. Files on the workload's cluster filesystems
 * (the target mounts the same), in its declared local dirs (copied with it), its own output log
 * (ferry places it on the target), unlinked files (host/unlinked-files.ts: ghost files or pins),
 * and pseudo filesystems (/proc, /sys, /dev belong to whichever kernel runs it; not /dev/shm, the
 * host's tmpfs of POSIX shared memory objects).
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants, type Stats } from 'node:fs';
import { lstat, open, readFile, readdir, readlink, stat } from 'node:fs/promises';
import {
  ErrorCode,
  FerryError,
  MAX_LOCAL_FILE_PATH_BYTES,
  MAX_LOCAL_FILES,
  localFilePathBytes,
  type CheckFilesReply,
  type FileDifference,
  type FileIdentity,
} from '@ferry/protocol';
import { inLocalDir } from './local-dirs';

/** What one migration may hash on one host, files already in the digest cache not counted (~1 s of SHA-256 here, DESIGN.md). */
export const DEFAULT_HASH_BUDGET_BYTES = 1024 * 1024 * 1024;
/** Digests one agent remembers: a few workloads' libraries many times over. */
export const DEFAULT_DIGEST_CACHE_ENTRIES = 16_384;
/** Pseudo filesystems: what is open there belongs to the kernel the workload runs on, not to a disk. */
const PSEUDO_ROOTS = ['/proc', '/sys', '/dev'];
/**
 * Under /dev, yet files on this host's own tmpfs: POSIX shared memory objects and named semaphores
 * (shm_open, sem_open). CRIU reopens them by path on the target, so the target must have the same.
 */
const HOST_FILE_ROOTS = ['/dev/shm'];
const DELETED_SUFFIX = ' (deleted)';
const READ_CHUNK_BYTES = 1024 * 1024;

/** What belongs to the workload and moves (or is reached) another way; paths as the workload sees them. */
export interface LocalFileScope {
  /** Mount points of its cluster filesystems (WorkloadRecord.mounts[].path). */
  mounts: readonly string[];
  /** Its declared local dirs (WorkloadRecord.localDirs). */
  localDirs: readonly string[];
  /** Single files ferry itself moves: its output log. */
  ownFiles: readonly string[];
  /**
   * Mounts of the workload's own mount namespace whose contents CRIU dumps with it (the fresh
   * /dev/shm of a `--user` workload, host/isolated-root.ts): the target's host path is not theirs.
   */
  ownMounts?: readonly string[];
}

/** One regular file the tree holds open. */
export interface HeldFile {
  /** As the workload sees it (resolved in its root and mount namespace by the kernel). */
  path: string;
  /** The open file itself, for this agent to stat and read: /proc/PID/fd/N or /proc/PID/map_files/RANGE. */
  via: string;
  pid: number;
  kind: 'fd' | 'mmap';
}

function underAny(path: string, roots: readonly string[]): boolean {
  return roots.some((root) => path === root || path.startsWith(root === '/' ? '/' : `${root}/`));
}

function excluded(path: string, scope: LocalFileScope): boolean {
  return (underAny(path, PSEUDO_ROOTS) && !underAny(path, HOST_FILE_ROOTS)) || underAny(path, scope.mounts) || inLocalDir(path, scope.localDirs) || scope.ownFiles.includes(path) || underAny(path, scope.ownMounts ?? []);
}

/**
 * Every regular file the processes hold open through an fd or a mapping, one entry per path,
 * less what `scope` and the rules above leave out. Processes that exit meanwhile are skipped.
 */
export async function findHeldFiles(pids: readonly number[], scope: LocalFileScope): Promise<HeldFile[]> {
  const found = new Map<string, HeldFile>();
  // Sockets, pipes and anonymous inodes have no path; deleted files are unlinked-files.ts's.
  const wanted = (target: string) => target.startsWith('/') && !target.endsWith(DELETED_SUFFIX) && !found.has(target) && !excluded(target, scope);
  const add = async (pid: number, path: string, via: string, kind: HeldFile['kind']) => {
    // stat() follows the magic link to the open file: a FIFO or a device at that path is no regular file.
    if ((await stat(via).catch(() => null))?.isFile()) found.set(path, { path, via, pid, kind });
  };
  for (const pid of pids) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const via = `/proc/${pid}/fd/${fd}`;
      const target = await readlink(via).catch(() => '');
      if (wanted(target)) await add(pid, target, via, 'fd');
    }
    for (const line of (await readFile(`/proc/${pid}/maps`, 'utf8').catch(() => '')).split('\n')) {
      const m = /^([0-9a-f]+-[0-9a-f]+) \S{4} \S+ \S+ \d+\s+(\/.*)$/.exec(line);
      const [range, path] = [m?.[1] ?? '', m?.[2] ?? ''];
      if (!wanted(path)) continue;
      // map_files names the mapped file itself (root only); the path through the workload's own root is the fallback.
      const viaMap = `/proc/${pid}/map_files/${range}`;
      await add(pid, path, (await stat(viaMap).catch(() => null)) ? viaMap : `/proc/${pid}/root${path}`, 'mmap');
    }
  }
  return [...found.values()];
}

interface CachedDigest {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  sha256: string;
}

/** What hashing one file found: its digest, unless it changed while being read. */
type HashResult = { sha256: string; stable: true } | { stable: false; after: Stats };

/**
 * SHA-256 of regular files, remembered by device and inode for as long as their size, mtime and
 * ctime stay the same (ctime too: `touch -d` can put an mtime back, not a ctime), so the libraries
 * every workload maps are hashed once per agent, not once per migration. Bounded: the oldest
 * entries go first.
 */
export class FileDigests {
  private readonly cache = new Map<string, CachedDigest>();
  /** Bytes actually read, for tests and logs. */
  hashedBytes = 0;

  constructor(private readonly maxEntries = DEFAULT_DIGEST_CACHE_ENTRIES) {}

  /** The remembered digest of the file `st` describes, if it has not changed since. */
  cached(st: Stats): string | undefined {
    const hit = this.cache.get(`${st.dev}:${st.ino}`);
    return hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ctimeMs === st.ctimeMs ? hit.sha256 : undefined;
  }

  /**
   * Reads the file at `openPath` (which must still be the file `st` describes: same device and
   * inode, regular) up to `st.size` bytes and hashes them. `noFollow`: refuse a symlink there
   * (a target checking a path); a /proc magic link must be followed (a source reading an open file).
   * O_NONBLOCK: a FIFO swapped in after the stat must not block the agent.
   */
  async hash(openPath: string, st: Stats, { noFollow = false } = {}): Promise<HashResult> {
    const handle = await open(openPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | (noFollow ? fsConstants.O_NOFOLLOW : 0));
    try {
      const opened = await handle.stat();
      if (!opened.isFile() || opened.dev !== st.dev || opened.ino !== st.ino) return { stable: false, after: opened };
      const digest = createHash('sha256');
      const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, Math.max(st.size, 1)));
      let pos = 0;
      while (pos < st.size) {
        const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, st.size - pos), pos);
        if (bytesRead === 0) break;
        digest.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      this.hashedBytes += pos;
      const after = await handle.stat();
      if (pos !== st.size || after.size !== st.size || after.mtimeMs !== st.mtimeMs || after.ctimeMs !== st.ctimeMs) return { stable: false, after };
      const sha256 = digest.digest('hex');
      this.remember(st, sha256);
      return { sha256, stable: true };
    } finally {
      await handle.close();
    }
  }

  private remember(st: Stats, sha256: string): void {
    const key = `${st.dev}:${st.ino}`;
    this.cache.delete(key);
    this.cache.set(key, { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, sha256 });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
  }
}

/** Refuses, before reading a byte, a set of files whose uncached content exceeds the budget. */
function checkBudget(uncached: Array<{ path: string; size: number }>, budgetBytes: number, where: string): void {
  const total = uncached.reduce((n, f) => n + f.size, 0);
  if (total <= budgetBytes) return;
  const largest = [...uncached].sort((a, b) => b.size - a.size).slice(0, 5);
  throw new FerryError(
    ErrorCode.FAILED_PRECONDITION,
    `comparing the workload's local files would read ${total} bytes on ${where}, over the budget of ${budgetBytes} bytes a migration may hash ` +
      `(largest: ${largest.map((f) => `${f.path} (${f.size} bytes)`).join(', ')}); ` +
      'declare their directories with `ferry run --local-dir` or keep them on a cluster filesystem',
    { details: largest.map((f) => f.path) },
  );
}

export interface LocalFilesOptions {
  digests: FileDigests;
  /** Most bytes this call may hash (default DEFAULT_HASH_BUDGET_BYTES). */
  hashBudgetBytes?: number;
}

/**
 * The identity of every local file the tree holds open (see the file comment): FAILED_PRECONDITION
 * over MAX_LOCAL_FILES files or the hash budget, or for a file written while it is read (its
 * content cannot be compared). A file seen open only once (a program writing a file and closing it
 * again) is not held: only files still open after hashing are listed.
 */
export async function listLocalFiles(pids: readonly number[], scope: LocalFileScope, opts: LocalFilesOptions): Promise<FileIdentity[]> {
  const held = await findHeldFiles(pids, scope);
  if (held.length > MAX_LOCAL_FILES) {
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `the workload holds ${held.length} files open on this host's local disks, more than the ${MAX_LOCAL_FILES} a pre-flight compares; ` +
        'declare their directories with `ferry run --local-dir` or keep them on a cluster filesystem',
    );
  }
  const pathBytes = localFilePathBytes(held);
  if (pathBytes > MAX_LOCAL_FILE_PATH_BYTES) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the paths of the workload's ${held.length} local files take ${pathBytes} bytes, more than the ${MAX_LOCAL_FILE_PATH_BYTES} a pre-flight carries`);
  }
  const stats = new Map<string, Stats>();
  for (const f of held) {
    const st = await stat(f.via).catch(() => null);
    if (st?.isFile()) stats.set(f.path, st);
  }
  const uncached = held.filter((f) => stats.has(f.path) && opts.digests.cached(stats.get(f.path) as Stats) === undefined);
  checkBudget(uncached.map((f) => ({ path: f.path, size: (stats.get(f.path) as Stats).size })), opts.hashBudgetBytes ?? DEFAULT_HASH_BUDGET_BYTES, 'the source');

  const identities = new Map<string, FileIdentity>();
  const bootId = await readBootId();
  for (const f of held) {
    const st = stats.get(f.path);
    if (!st) continue;
    let sha256 = opts.digests.cached(st);
    if (sha256 === undefined) {
      // Closed meanwhile, or its process gone (ENOENT through the /proc link): it was not held after all.
      const result = await opts.digests.hash(f.via, st).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ESRCH') return null;
        throw err;
      });
      if (result === null) continue;
      if (!result.stable) {
        // Being written: its content cannot be compared, only whether the target sees this very file.
        identities.set(f.path, { path: f.path, size: st.size, mtimeMs: st.mtimeMs, ...inodeOf(st, bootId) });
        continue;
      }
      sha256 = result.sha256;
    }
    identities.set(f.path, { path: f.path, size: st.size, mtimeMs: st.mtimeMs, sha256, ...inodeOf(st, bootId) });
  }
  const stillHeld = new Set((await findHeldFiles(pids, scope)).map((f) => f.path));
  return [...identities.values()].filter((f) => stillHeld.has(f.path));
}

/** This kernel's boot id (random per boot, per machine), or undefined where it cannot be read. */
export async function readBootId(): Promise<string | undefined> {
  const id = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim();
  return /^[0-9a-f-]{36}$/.test(id) ? id : undefined;
}

function inodeOf(st: Stats, bootId: string | undefined): Pick<FileIdentity, 'inode'> {
  return bootId ? { inode: { bootId, dev: st.dev, ino: st.ino } } : {};
}

/** The target sees the source's very file: the same kernel (boot id), device and inode at that path. */
function sameInode(want: FileIdentity, st: Stats, bootId: string | undefined): boolean {
  return bootId !== undefined && want.inode?.bootId === bootId && want.inode.dev === st.dev && want.inode.ino === st.ino;
}

/**
 * The target's half: for each file, whether this host has it at that path as the same file.
 * lstat, so a symlink there is another file (CRIU would open whatever it points to); a path that
 * is not a regular file is `type`; then size, mtime, and only then the content (hashed within the
 * budget, through the same cache). A file changing while it is read counts as differing by mtime.
 */
export async function checkFiles(files: readonly FileIdentity[], opts: LocalFilesOptions, dirs: readonly string[] = []): Promise<CheckFilesReply> {
  const missingDirs: string[] = [];
  // lstat: a symlink there is no directory to bind (the mount would follow it wherever it points).
  for (const dir of dirs) if (!(await lstat(dir).catch(() => null))?.isDirectory()) missingDirs.push(dir);
  const missing: string[] = [];
  const different: CheckFilesReply['different'] = [];
  const toHash: Array<{ want: FileIdentity; st: Stats }> = [];
  const bootId = await readBootId();
  for (const want of files) {
    const st = await lstat(want.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
      throw err;
    });
    if (st === null) missing.push(want.path);
    else if (!st.isFile()) different.push({ path: want.path, why: 'type' });
    // The very same file (hosts sharing a kernel and filesystem): nothing to compare.
    else if (sameInode(want, st, bootId)) continue;
    else if (want.sha256 === undefined) different.push({ path: want.path, why: 'written' });
    else if (st.size !== want.size) different.push({ path: want.path, why: 'size' });
    else if (st.mtimeMs !== want.mtimeMs) different.push({ path: want.path, why: 'mtime' });
    else {
      const sha256 = opts.digests.cached(st);
      if (sha256 === undefined) toHash.push({ want, st });
      else if (sha256 !== want.sha256) different.push({ path: want.path, why: 'sha256' });
    }
  }
  checkBudget(toHash.map(({ want, st }) => ({ path: want.path, size: st.size })), opts.hashBudgetBytes ?? DEFAULT_HASH_BUDGET_BYTES, 'the target');
  for (const { want, st } of toHash) {
    let result: Awaited<ReturnType<FileDigests['hash']>>;
    try {
      result = await opts.digests.hash(want.path, st, { noFollow: true });
    } catch (err) {
      // Gone since the lstat, or a symlink now (O_NOFOLLOW: ELOOP).
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') missing.push(want.path);
      else if (code === 'ELOOP') different.push({ path: want.path, why: 'type' });
      else throw err;
      continue;
    }
    const why: FileDifference | null = !result.stable ? (result.after.isFile() ? 'mtime' : 'type') : result.sha256 !== want.sha256 ? 'sha256' : null;
    if (why !== null) different.push({ path: want.path, why });
  }
  return { missing, different, missingDirs };
}
