/**
 * Memory pre-copy, the source side. This kernel kind has no soft-dirty tracking, so CRIU cannot
 * pre-dump (`criu pre-dump` hits a BUG without it) and nothing tells which pages a running program
 * wrote. Content can: while the workload runs, each process's private memory (host/private-memory.ts)
 * is read (process_vm_readv) into the image stream as `precopy/mem-K.pages`, every 4 KiB page hashed
 * on the way (XXH3-128, @ferry/native precopyRead). Then the freeze: CRIU's streamed dump hands over
 * `pages-N.img` as usual, and a native filter (dedupPages) replaces every page whose content the
 * target already holds with a reference to it, so the stream carries `pages-N.img.delta`: the pages
 * that changed, and references (runs of them: a few bytes for gigabytes unchanged). The target
 * turns the two into CRIU's own incremental images before it restores (page-delta.ts), which the
 * address runs each pre-copy file was read from (`precopy/mem-K.runs`, sent with the image) let it
 * do without copying what did not change.
 *
 * A page the workload writes while it is read may be torn; the hash is of the bytes sent, so such a
 * page matches nothing at the freeze and goes again. A reference only ever names bytes the target
 * has, under the migration's key; a wrong one could only come from a 128-bit hash collision between
 * two versions of the workload's own page.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LinuxSyscalls, PageIndex } from '@ferry/native';
import { buildPageIndex, PRECOPY_READ_MAX_BYTES } from '@ferry/native';
import { ErrorCode, FerryError, toFerryError, type Logger } from '@ferry/protocol';
import type { LiveImageFile } from '@ferry/transfer';
import { isLiveImageName, STREAM_PIPE_BYTES } from '../criu/image-streamer';
import { privateMemoryRuns, type MemoryRuns } from '../host/private-memory';
import { deltaNameOf, PRECOPY_DIR, precopyFileName, precopyRunsName } from './page-delta';
import { growSocketBuffers } from './page-tunnel';

export type PrecopySyscalls = Pick<LinuxSyscalls, 'socketpair' | 'close' | 'precopyRead' | 'dedupPages' | 'setsockoptInt' | 'lazyServe'>;


export class MemoryPrecopy {
  private readonly hashes: Buffer[] = [];
  private readonly started = performance.now();
  private precopyMs = 0;
  private index: PageIndex | undefined;
  private readonly fileDone: Promise<void>[] = [];
  private resolveAllYielded!: () => void;
  private readonly allYielded = new Promise<void>((resolve) => (this.resolveAllYielded = resolve));
  /** Bytes the pass read and sent. */
  bytes = 0;
  /**
   * Settles once the target has every pre-copy file whole. Only then does the freeze come; the
   * page index the dump's filter looks pages up in is built from their hashes.
   */
  readonly precopied: Promise<void> = this.allYielded
    .then(() => Promise.all(this.fileDone))
    .then(() => {
      this.index = buildPageIndex(this.hashes);
      this.precopyMs = performance.now() - this.started;
    });

  private constructor(
    private readonly sys: PrecopySyscalls,
    private readonly processes: { pid: number; runs: MemoryRuns }[],
    private readonly maxBytes: number,
    private readonly log: Logger,
  ) {}

  /**
   * The pre-copy of the tree `pids`, or undefined when its private memory is under `minBytes` (the
   * extra pass would cost more than it saves) or over `maxBytes` (it would not fit the image).
   */
  static async plan(sys: PrecopySyscalls, pids: readonly number[], { minBytes, maxBytes }: { minBytes: number; maxBytes: number }, log: Logger): Promise<MemoryPrecopy | undefined> {
    const processes: { pid: number; runs: MemoryRuns }[] = [];
    let total = 0;
    for (const pid of pids) {
      const runs = await privateMemoryRuns(pid);
      if (runs.count === 0) continue;
      processes.push({ pid, runs });
      total += runs.bytes;
    }
    if (total < minBytes || total > Math.min(maxBytes, PRECOPY_READ_MAX_BYTES) || processes.length === 0) {
      log.info({ bytes: total, minBytes, maxBytes }, 'memory pre-copy skipped');
      return undefined;
    }
    return new MemoryPrecopy(sys, processes, Math.min(maxBytes, PRECOPY_READ_MAX_BYTES), log);
  }

  /** Writes `precopy/mem-K.runs` (the runs file K is read from) into the images dir, to go with the image. */
  async writeRuns(dir: string): Promise<void> {
    await mkdir(join(dir, PRECOPY_DIR), { recursive: true, mode: 0o700 });
    for (const [k, { runs }] of this.processes.entries()) await writeFile(join(dir, precopyRunsName(k)), runs.runs, { mode: 0o600 });
  }

  /** How long the pass took, from its start to the target having every file. */
  get milliseconds(): number {
    return Math.round(this.precopyMs);
  }

  /** The pre-copy files, one per process, as live files for the sender (the workload running). */
  async *files(): AsyncGenerator<LiveImageFile> {
    for (const [k, { pid, runs }] of this.processes.entries()) {
      let onDone!: () => void;
      this.fileDone.push(new Promise<void>((resolve) => (onDone = resolve)));
      const [readEnd, writeEnd] = this.socketPair();
      // The reader closes its end once it is through: the sender then sees the file's end.
      const reading = this.sys.precopyRead(pid, runs.runs, writeEnd, { maxBytes: this.maxBytes }).finally(() => this.sys.close(writeEnd));
      reading.catch(() => undefined);
      try {
        yield { path: precopyFileName(k), mode: 0o600, fd: readEnd, onDone };
      } finally {
        this.sys.close(readEnd);
      }
      let read: Awaited<typeof reading>;
      try {
        read = await reading;
      } catch (err) {
        throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `memory pre-copy of pid ${pid} failed: ${toFerryError(err).message}`, { cause: err });
      }
      this.hashes.push(read.hashes);
      this.bytes += read.bytes;
      this.log.info({ pid, bytes: read.bytes, runs: runs.count, unreadableBytes: read.unreadableBytes }, 'memory pre-copied');
    }
    // Not awaited here: a generator waiting on a promise cannot be stopped by its consumer.
    this.resolveAllYielded();
  }

  /**
   * The dump's live files with every pages image turned into its delta against the pre-copy
   * (dedupPages on a native thread, between CRIU's pipe and the sender). Others pass as they are.
   */
  async *deltas(live: AsyncIterable<LiveImageFile>): AsyncGenerator<LiveImageFile> {
    const index = this.index;
    if (!index) throw new FerryError(ErrorCode.INTERNAL, 'the dump started before the memory pre-copy was across');
    for await (const file of live) {
      if (!isLiveImageName(file.path)) {
        yield file;
        continue;
      }
      const [readEnd, writeEnd] = this.socketPair();
      const filtering = this.sys.dedupPages(index, file.fd, writeEnd).finally(() => this.sys.close(writeEnd));
      filtering.catch(() => undefined);
      try {
        yield { path: deltaNameOf(file.path), mode: file.mode, fd: readEnd, ...(file.onDone ? { onDone: file.onDone } : {}) };
      } finally {
        this.sys.close(readEnd);
      }
      // A filter that failed wrote no END record (the target refuses the delta); the stream fails here too.
      try {
        const counts = await filtering;
        this.log.info({ file: file.path, ...counts }, 'pages sent as a delta of the pre-copy');
      } catch (err) {
        throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `filtering ${file.path} against the pre-copy failed: ${toFerryError(err).message}`, { cause: err });
      }
    }
  }

  /** A socket pair with buffers as large as the streamer's pipes: fewer, larger reads for the pump. */
  private socketPair(): [number, number] {
    const ends = this.sys.socketpair();
    for (const fd of ends) growSocketBuffers(this.sys, fd, STREAM_PIPE_BYTES);
    return ends;
  }
}
