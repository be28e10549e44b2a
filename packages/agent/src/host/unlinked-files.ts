/**
 * Unlinked-but-open files of a workload (open fds and file mappings whose last name is gone).
 *
 * On a local filesystem CRIU copies such a file into the image (a "ghost file"), bounded by its
 * --ghost-limit. On a shared filesystem that would send the content over the network although the
 * file still lives on the server under a hidden name (.fuse_hidden*, .nfs*) until the source's
 * last close, which the migration itself causes. There ferry (DESIGN.md, measured here):
 *   1. hard-links the hidden file to a pin name on the same filesystem (the kernel refuses
 *      linkat() through /proc/PID/fd for a file it counts as unlinked, so the hidden name is used),
 *   2. dumps it as an external file (`--external file[<mnt_id>:<ino>]`),
 *   3. on the target opens the pin with the original flags and offset and hands the fd to CRIU
 *      (`--inherit-fd fd[N]:file[...]`), then unlinks the pin.
 * No byte of the file crosses the network.
 */
import { link, readFile, readdir, readlink, stat, unlink } from 'node:fs/promises';
import { openSync, closeSync, constants as fsConstants, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { readOfLiving } from './process-tree';
import { SILLY_RENAME_PATTERN, isSharedFsType, mountOf, parseMountinfo, type MountEntry } from './shared-mounts';

const DELETED_SUFFIX = ' (deleted)';
/** Mappings the kernel shows as deleted files that are not files a workload opened: SysV shm, shared anonymous memory, memfd. */
const NOT_A_FILE = /^\/(SYSV[0-9a-f]{8}|dev\/zero|memfd:|dev\/shm\/\.?memfd)/;

/** Open flags worth restoring on a reopened file; creation flags and O_CLOEXEC are not (CRIU restores fd flags itself). */
/** O_RDONLY | O_WRONLY | O_RDWR; Node's fs.constants lacks O_ACCMODE. */
const O_ACCMODE = 3;
const KEPT_OPEN_FLAGS =
  O_ACCMODE |
  fsConstants.O_APPEND |
  fsConstants.O_NONBLOCK |
  fsConstants.O_DSYNC |
  fsConstants.O_DIRECT |
  fsConstants.O_NOATIME |
  fsConstants.O_SYNC;

export interface UnlinkedFile {
  /** CRIU's identity of the file: `file[<mnt_id hex>:<inode hex>]`. */
  key: string;
  /** Where it was found first: an fd or only a mapping. */
  kind: 'fd' | 'mmap';
  pid: number;
  /** The name it had. */
  path: string;
  ino: number;
  /** Apparent size (st_size). */
  size: number;
  /**
   * Bytes the filesystem holds for it (st_blocks * 512): what CRIU copies into the image, which
   * skips holes. A sparse 2 GiB file with a few KiB written costs a few KiB.
   */
  allocatedBytes: number;
  mount: MountEntry;
  /** On a shared filesystem (pinnable) rather than local (a ghost file in the image). */
  shared: boolean;
  /** Flags to reopen it with. */
  flags: number;
  /** File offset to restore (0 for a mapping). */
  pos: number;
}

/** What the target needs to reopen a pinned file. Travels in the image manifest. */
export interface PinnedFile {
  key: string;
  pinPath: string;
  flags: number;
  pos: number;
}

function externalKey(mountId: number, ino: number): string {
  return `file[${mountId.toString(16)}:${ino.toString(16)}]`;
}

function deletedPath(target: string): string | null {
  if (!target.endsWith(DELETED_SUFFIX) || !target.startsWith('/')) return null;
  const path = target.slice(0, -DELETED_SUFFIX.length);
  return NOT_A_FILE.test(path) ? null : path;
}

/** Every unlinked-but-open regular file of the given processes, one entry per file. */
export async function findUnlinkedFiles(pids: number[]): Promise<UnlinkedFile[]> {
  const found = new Map<string, UnlinkedFile>();
  /** Records the first sighting of a file (an fd wins over a mapping: it carries flags and offset). */
  const add = (pid: number, path: string, st: Stats, mount: MountEntry, how: Pick<UnlinkedFile, 'kind' | 'flags' | 'pos'>) => {
    const key = externalKey(mount.mountId, st.ino);
    if (!found.has(key)) {
      found.set(key, { key, pid, path, ino: st.ino, size: st.size, allocatedBytes: st.blocks * 512, mount, shared: isSharedFsType(mount.fsType), ...how });
    }
  };
  for (const pid of pids) {
    // A process that ends while we look (a database backend whose client left) holds nothing to move.
    const mountinfo = await readOfLiving(() => readFile(`/proc/${pid}/mountinfo`, 'utf8'));
    if (mountinfo === null) continue;
    const mounts = parseMountinfo(mountinfo);
    const byId = new Map(mounts.map((m) => [m.mountId, m]));
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const path = deletedPath(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
      if (!path) continue;
      const st = await stat(`/proc/${pid}/fd/${fd}`).catch(() => null);
      if (!st?.isFile()) continue;
      const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => null);
      if (info === null) continue; // closed (or its process ended) since the readdir
      const field = (name: string) => new RegExp(`^${name}:\\s+(\\S+)`, 'm').exec(info)?.[1];
      const mount = byId.get(Number(field('mnt_id'))) ?? mountOf(mounts, path);
      if (!mount) continue;
      add(pid, path, st, mount, { kind: 'fd', flags: parseInt(field('flags') ?? '0', 8) & KEPT_OPEN_FLAGS, pos: Number(field('pos') ?? 0) });
    }
    const maps = (await readOfLiving(() => readFile(`/proc/${pid}/maps`, 'utf8'))) ?? '';
    for (const line of maps.split('\n')) {
      const m = /^([0-9a-f]+-[0-9a-f]+) (\S{4}) \S+ \S+ \d+\s+(.*)$/.exec(line);
      const path = m && deletedPath(m[3]);
      if (!m || !path) continue;
      const st = await stat(`/proc/${pid}/map_files/${m[1]}`).catch(() => null);
      const mount = mountOf(mounts, path);
      if (!st?.isFile() || !mount) continue;
      const writableShared = m[2][1] === 'w' && m[2][3] === 's';
      add(pid, path, st, mount, { kind: 'mmap', flags: writableShared ? fsConstants.O_RDWR : fsConstants.O_RDONLY, pos: 0 });
    }
  }
  return [...found.values()];
}

/**
 * Refuses, before anything is frozen, a local unlinked file larger than CRIU would copy. Judged by
 * its allocated blocks, as CRIU 4.2.1 judges it (measured: a 2 GiB sparse ghost file with 4 KiB
 * written dumps under a 64 MiB --ghost-limit, into a 4 KiB ghost image): the apparent size refused
 * sparse files CRIU moves without effort.
 */
export function checkGhostLimit(files: UnlinkedFile[], ghostLimitBytes: number): void {
  const tooBig = files.filter((f) => !f.shared && f.allocatedBytes > ghostLimitBytes);
  if (tooBig.length > 0) {
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `unlinked-but-open file(s) on a local filesystem exceed the ghost-file limit of ${ghostLimitBytes} bytes ` +
        `(their content would travel in the image): ${tooBig.map((f) => `${f.path} (${f.allocatedBytes} bytes allocated)`).join(', ')}; ` +
        'raise the agent ghost limit (FERRY_GHOST_LIMIT_BYTES) or keep such files on a shared filesystem',
    );
  }
}

/** The client's hidden name for an unlinked file: the silly-renamed entry in its directory with its inode. */
async function hiddenNameOf(file: UnlinkedFile): Promise<string> {
  const dir = dirname(file.path);
  for (const entry of await readdir(dir)) {
    if (!SILLY_RENAME_PATTERN.test(entry)) continue;
    const st = await stat(join(dir, entry)).catch(() => null);
    if (st && st.ino === file.ino) return join(dir, entry);
  }
  throw new FerryError(ErrorCode.FAILED_PRECONDITION, `unlinked file ${file.path} on ${file.mount.fsType} has no hidden name in ${dir} to pin`);
}

/** Pins each shared unlinked file under a name the migration owns. Undone by removePins(). */
export async function pinSharedFiles(files: UnlinkedFile[], migrationId: string): Promise<PinnedFile[]> {
  const pins: PinnedFile[] = [];
  try {
    for (const f of files.filter((x) => x.shared)) {
      const pinPath = join(dirname(f.path), `.ferry-pin-${migrationId}-${f.ino.toString(16)}`);
      await unlink(pinPath).catch(() => undefined);
      await link(await hiddenNameOf(f), pinPath);
      pins.push({ key: f.key, pinPath, flags: f.flags, pos: f.pos });
    }
  } catch (err) {
    await removePins(pins);
    throw err;
  }
  return pins;
}

export async function removePins(pins: PinnedFile[]): Promise<void> {
  for (const p of pins) await unlink(p.pinPath).catch(() => undefined);
}

export interface InheritedFd {
  fd: number;
  key: string;
}

/**
 * Opens every pin with its original flags and offset, for CRIU to inherit. The caller closes
 * them (closeInherited) once CRIU has its own copies.
 */
export function openPins(pins: PinnedFile[], seek: (fd: number, pos: number) => void): InheritedFd[] {
  const opened: InheritedFd[] = [];
  try {
    for (const p of pins) {
      const fd = openSync(p.pinPath, p.flags);
      opened.push({ fd, key: p.key });
      if (p.pos > 0) seek(fd, p.pos);
    }
  } catch (err) {
    closeInherited(opened);
    throw new FerryError(ErrorCode.RESTORE_FAILED, `cannot reopen a pinned unlinked file: ${(err as Error).message}`, { cause: err });
  }
  return opened;
}

export function closeInherited(fds: InheritedFd[]): void {
  for (const f of fds) {
    try {
      closeSync(f.fd);
    } catch {
      // already closed
    }
  }
}
