/**
 * A workload's host-local directories (`ferry run --local-dir`, host/local-dirs.ts) move with it,
 * through the migration's own sealed image stream, as GNU tar archives (tar keeps what a user
 * expects of a copy: sparse files sparse, hard links, symlinks, permissions, numeric owners,
 * xattrs, ACLs, mtimes; and its --listed-incremental snapshots give the second pass):
 *
 * 1. While the workload still runs, one full archive per directory goes first in the image stream
 *    (a live file, pumped onto the direct connection as tar writes it); the target extracts it as
 *    soon as it has arrived, while the source dumps.
 * 2. Once the workload is frozen and dumped, an incremental archive per directory carries only
 *    what changed since the first pass (and which files went away); the target applies it before
 *    the restore. Downtime grows with what changed, not with the directory's size.
 * 3. The source removes its directories only after the target confirmed (release); a rollback
 *    leaves them untouched (nothing here ever writes on the source), and the target removes what
 *    it extracted.
 *
 * The archives are authenticated by the stream (AES-GCM under the migration's key); the target
 * still extracts only into the directories the coordinator named, below its own roots, that were
 * absent or empty, and GNU tar refuses members that climb out of the directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LinuxSyscalls } from '@ferry/native';
import { ErrorCode, FerryError, type Logger } from '@ferry/protocol';
import type { FileSink, LiveImageFile } from '@ferry/transfer';

export const TAR_PATH = 'tar';

/** The archives' names in the image: index into the workload's local dirs, and the pass. */
export function localTarName(index: number, pass: 'full' | 'incr'): string {
  return `ferry-local-${index}.${pass}.tar`;
}

/** The index and pass of a local dir archive's name, or undefined for any other image file. */
export function parseLocalTarName(name: string): { index: number; pass: 'full' | 'incr' } | undefined {
  const m = /^ferry-local-(\d{1,2})\.(full|incr)\.tar$/.exec(name);
  return m ? { index: Number(m[1]), pass: m[2] as 'full' | 'incr' } : undefined;
}

/** What both tar invocations keep: everything a copy of a directory should. */
const KEEP = ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner'];

/** tar's exit status 1 when creating: a file changed while it was read. The next pass carries it. */
const TAR_FILE_CHANGED = 1;

export type LocalDirSyscalls = Pick<LinuxSyscalls, 'socketpair' | 'close'>;

/**
 * Source side: the archives of one checkpoint, as live image files for the sender. `fullArchives`
 * yields the first pass (the workload running); `incrementalArchives` the second (the workload frozen).
 */
export class LocalDirSender {
  private readonly snapshots: string[];
  private readonly started = performance.now();
  private precopyMs = 0;
  /** One per full archive yielded: settles when the receiver has it whole (LiveImageFile.onDone). */
  private readonly fullDone: Promise<void>[] = [];
  private resolveAllYielded!: () => void;
  private readonly allYielded = new Promise<void>((resolve) => (this.resolveAllYielded = resolve));
  /**
   * Settles once the target has every full archive whole: extracted through its sink as it came
   * (or, where the stream is not pumped, once they are written here). Only then does the freeze come.
   */
  readonly precopied: Promise<void> = this.allYielded
    .then(() => Promise.all(this.fullDone))
    .then(() => {
      this.precopyMs = performance.now() - this.started;
    });

  constructor(
    private readonly sys: LocalDirSyscalls,
    private readonly dirs: readonly string[],
    /** Where the snapshots live (WorkDirs.localPathFor): beside the images, never sent. */
    private readonly workDir: string,
    private readonly log: Logger,
  ) {
    this.snapshots = dirs.map((_, i) => join(workDir, `local-${i}.snar`));
  }

  /** First pass: every directory whole, while the workload runs. */
  async *fullArchives(): AsyncGenerator<LiveImageFile> {
    await mkdir(this.workDir, { recursive: true, mode: 0o700 });
    for (const [i, dir] of this.dirs.entries()) {
      await rm(this.snapshots[i]!, { force: true });
      let onDone!: () => void;
      this.fullDone.push(new Promise<void>((resolve) => (onDone = resolve)));
      yield* this.archive(dir, localTarName(i, 'full'), this.snapshots[i]!, onDone);
    }
    // Not awaited here: a generator waiting on a promise cannot be stopped by its consumer.
    this.resolveAllYielded();
  }

  /** Second pass: what changed since the first (new and modified files, and the directories' listings, so deletions apply). */
  async *incrementalArchives(): AsyncGenerator<LiveImageFile> {
    for (const [i, dir] of this.dirs.entries()) {
      // tar updates a snapshot in place: the second pass works on a copy of the first's.
      const second = `${this.snapshots[i]!}.2`;
      await copyFile(this.snapshots[i]!, second);
      await backdateSnapshot(second, SNAPSHOT_SLACK_NS);
      yield* this.archive(dir, localTarName(i, 'incr'), second);
    }
  }

  /** How long the first pass took, from the first archive's start to the target having them all. */
  get precopyMilliseconds(): number {
    return Math.round(this.precopyMs);
  }

  /** One archive of `dir` on a socket pair whose read end the sender pumps; tar's status checked once it is through. */
  private async *archive(dir: string, name: string, snapshot: string, onDone?: () => void): AsyncGenerator<LiveImageFile> {
    const [readEnd, writeEnd] = this.sys.socketpair();
    let child: ChildProcess;
    let stderr = '';
    try {
      child = spawn(
        TAR_PATH,
        ['--create', '--file=-', `--listed-incremental=${snapshot}`, '--sparse', '--one-file-system', ...KEEP, '-C', dir, '.'],
        { stdio: ['ignore', writeEnd, 'pipe'] },
      );
    } finally {
      // The child has its copy: ours closed, the reader sees the end when tar exits.
      this.sys.close(writeEnd);
    }
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', (err) => {
        stderr += err.message;
        resolve(null);
      });
    });
    let taken = false;
    try {
      yield { path: name, mode: 0o600, fd: readEnd, ...(onDone ? { onDone } : {}) };
      taken = true;
    } finally {
      this.sys.close(readEnd);
      if (!taken) {
        // The sender stopped: tar goes, and is waited for, so nothing of it outlives the checkpoint.
        child.kill('SIGKILL');
        await exited;
      }
    }
    const code = await exited;
    if (code !== 0 && code !== TAR_FILE_CHANGED) {
      throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `archiving local dir ${dir} failed (tar exit ${code}): ${stderr.trim().slice(-500)}`);
    }
    this.log.info({ dir, archive: name, changedWhileRead: code === TAR_FILE_CHANGED }, 'local dir archived');
  }
}

/**
 * How far the second pass looks back before the first pass began. tar takes "changed since" from
 * the snapshot: the first pass's start, read from a fine clock; but a file's mtime and ctime come
 * from the kernel's coarse clock, which lags it by up to a tick (1-10 ms). A file the first pass
 * read and the workload rewrote within that tick would carry a time before the snapshot's and be
 * left out of the second pass: the target would keep the old bytes (a unit test caught it).
 * Backdated by ten ticks of the slowest kernel clock, the second pass also carries files last
 * changed just before the first began: a few more bytes while frozen, never a stale file. (Two
 * seconds made it carry whole directories written just before a migration: 1.4 s of downtime for
 * a 512 MiB one in the bench.)
 */
const SNAPSHOT_SLACK_NS = 100_000_000n;

/**
 * Moves the start time a --listed-incremental snapshot records (format 2: the version line, then
 * seconds NUL nanoseconds NUL) `slackNs` nanoseconds earlier.
 */
export async function backdateSnapshot(path: string, slackNs: bigint): Promise<void> {
  const data = await readFile(path);
  const lineEnd = data.indexOf(0x0a);
  const secondsEnd = data.indexOf(0x00, lineEnd + 1);
  const nanosEnd = data.indexOf(0x00, secondsEnd + 1);
  const header = data.subarray(0, Math.max(0, lineEnd)).toString('latin1');
  const seconds = data.subarray(lineEnd + 1, secondsEnd).toString('latin1');
  const nanos = data.subarray(secondsEnd + 1, nanosEnd).toString('latin1');
  if (lineEnd < 0 || secondsEnd < 0 || nanosEnd < 0 || !/^GNU tar-[\d.]+-2$/.test(header) || !/^\d{1,15}$/.test(seconds) || !/^\d{1,9}$/.test(nanos)) {
    throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `tar snapshot ${path} is not in the format ferry reads (${JSON.stringify(header.slice(0, 40))})`);
  }
  let at = BigInt(seconds) * 1_000_000_000n + BigInt(nanos) - slackNs;
  if (at < 0n) at = 0n;
  const time = Buffer.from(`${at / 1_000_000_000n}\0${at % 1_000_000_000n}`, 'latin1');
  await writeFile(path, Buffer.concat([data.subarray(0, lineEnd + 1), time, data.subarray(nanosEnd)]));
}

/** Removes the workload's local dirs from the source, once the target has confirmed the move. */
export async function removeLocalDirs(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}

/**
 * Target side: checked at receive, before anything is frozen: each directory must be absent or
 * empty here (an existing one with content belongs to someone else, and would be merged into).
 */
export async function assertLocalDirsFree(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) {
    const st = await stat(dir).catch(() => undefined);
    if (st === undefined) continue;
    if (!st.isDirectory() || (await readdir(dir)).length > 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `local dir ${dir} already exists on this host with content; it would be overwritten by the workload's`);
    }
  }
}

/**
 * Target side: extracts the archives as they arrive: each full one at once (the source is still
 * dumping), the incremental ones just before the restore. Remembers what it created, for a rollback.
 */
export class LocalDirReceiver {
  private readonly extractions = new Map<number, Promise<void>>();
  private readonly created = new Set<string>();
  private failure: FerryError | undefined;

  constructor(
    private readonly sys: LocalDirSyscalls,
    private readonly dirs: readonly string[],
    private readonly log: Logger,
  ) {}

  /**
   * A full archive streamed on the pumped path goes straight into `tar --extract` (a socket pair
   * as its stdin), so the directory is extracted while it arrives and is whole when the receiver
   * acknowledges the archive's end, which the source waits for before it freezes the workload.
   */
  openSink(name: string): FileSink | undefined {
    const parsed = parseLocalTarName(name);
    if (parsed === undefined || parsed.pass !== 'full') return undefined;
    const dir = this.dirs[parsed.index];
    if (dir === undefined || this.extractions.has(parsed.index)) {
      this.failure ??= new FerryError(ErrorCode.INVALID_ARGUMENT, `image holds ${name}, which names no local dir of this workload`);
      return undefined;
    }
    const [tarEnd, ourEnd] = this.sys.socketpair();
    let ourEndOpen = true;
    const closeOurEnd = () => {
      if (!ourEndOpen) return;
      ourEndOpen = false;
      this.sys.close(ourEnd);
    };
    const extraction = this.extract(dir, '-', tarEnd);
    extraction.catch(() => undefined);
    this.extractions.set(parsed.index, extraction);
    return {
      fd: ourEnd,
      finish: async () => {
        // The end of its input: tar finishes the last member and exits.
        closeOurEnd();
        await extraction;
      },
      abort: () => {
        closeOurEnd();
        this.running.get(tarEnd)?.kill('SIGKILL');
      },
      progress: () => this.bytesRead(tarEnd),
    };
  }
  /** A file of the image has arrived whole: a full archive is extracted now, and its file freed. */
  onImageFile(name: string, absolutePath: string): void {
    const parsed = parseLocalTarName(name);
    if (parsed === undefined || parsed.pass !== 'full') return;
    const dir = this.dirs[parsed.index];
    if (dir === undefined || this.extractions.has(parsed.index)) {
      this.failure ??= new FerryError(ErrorCode.INVALID_ARGUMENT, `image holds ${name}, which names no local dir of this workload`);
      return;
    }
    const extraction = this.extract(dir, absolutePath).finally(() => rm(absolutePath, { force: true }));
    // Awaited by beforeRestore; a failure surfaces there.
    extraction.catch(() => undefined);
    this.extractions.set(parsed.index, extraction);
  }

  /** Before the restore: every full archive extracted, then each incremental one applied (deletions too). */
  async beforeRestore(imagesDir: string): Promise<void> {
    if (this.failure) throw this.failure;
    for (const [index, dir] of this.dirs.entries()) {
      const full = this.extractions.get(index);
      if (full === undefined) throw new FerryError(ErrorCode.TRANSFER_FAILED, `the image carries no archive of local dir ${dir}`);
      await full;
      const incr = join(imagesDir, localTarName(index, 'incr'));
      if ((await stat(incr).catch(() => undefined)) === undefined) throw new FerryError(ErrorCode.TRANSFER_FAILED, `the image carries no second pass of local dir ${dir}`);
      await this.extract(dir, incr);
      await rm(incr, { force: true });
    }
  }

  /** Rollback: what this migration extracted goes; a directory that was there (empty) stays. */
  async discard(): Promise<void> {
    await Promise.all([...this.extractions.values()].map((e) => e.catch(() => undefined)));
    for (const dir of this.created) await rm(dir, { recursive: true, force: true });
  }

  /** tar processes reading a sink, by the socket end they read (to stop one, and to see its progress). */
  private readonly running = new Map<number, ChildProcess>();

  /** What the tar reading `stdinFd` has read so far (/proc/PID/io rchar), 0 when unknown. */
  private bytesRead(stdinFd: number): number {
    const pid = this.running.get(stdinFd)?.pid;
    if (pid === undefined) return 0;
    try {
      return Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** Extracts `archive` (a file, or `-` to read `stdinFd`, which is closed here once tar has it) into `dir`. */
  private async extract(dir: string, archive: string, stdinFd?: number): Promise<void> {
    try {
      if ((await stat(dir).catch(() => undefined)) === undefined) {
        await mkdir(dir, { recursive: true, mode: 0o755 });
        this.created.add(dir);
      }
    } catch (err) {
      if (stdinFd !== undefined) this.sys.close(stdinFd);
      throw err;
    }
    // --listed-incremental=/dev/null: extract as an incremental archive, so files that were gone
    // from a directory when the second pass ran are removed here too.
    const args = ['--extract', `--file=${archive}`, '--listed-incremental=/dev/null', '--same-owner', '--same-permissions', ...KEEP, '-C', dir];
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(TAR_PATH, args, { stdio: [stdinFd ?? 'ignore', 'ignore', 'pipe'] });
      } finally {
        // tar has its copy of its input.
        if (stdinFd !== undefined) this.sys.close(stdinFd);
      }
      if (stdinFd !== undefined) this.running.set(stdinFd, child);
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
      child.once('error', (e) => resolve({ code: null, stderr: e.message }));
      child.once('exit', (c) => {
        if (stdinFd !== undefined) this.running.delete(stdinFd);
        resolve({ code: c, stderr: err });
      });
    });
    if (code !== 0) throw new FerryError(ErrorCode.RESTORE_FAILED, `extracting local dir ${dir} failed (tar exit ${code}): ${stderr.trim().slice(-500)}`);
    this.log.info({ dir, archive }, 'local dir archive extracted');
  }
}

type LiveFiles = AsyncIterable<LiveImageFile> | Iterable<LiveImageFile>;

/** Several live sources one after another, each asked for only once the previous one has ended. */
export async function* concatLive(...sources: (LiveFiles | (() => LiveFiles))[]): AsyncGenerator<LiveImageFile> {
  for (const source of sources) yield* typeof source === 'function' ? source() : source;
}
