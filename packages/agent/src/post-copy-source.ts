/**
 * Source side of post-copy: after the dump, the workload's lazy memory (private anonymous pages,
 * nearly all of a big workload) moves out of the images dir into the migration's lazy dir, and
 * this agent answers the target's requests for it over NATS until the migration is released or
 * rolled back. The frozen tree and these pages stay here until then, so a failure at any point
 * before the target has every page rolls back to an intact source.
 */
import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import type { NatsConnection } from 'nats';
import { ErrorCode, FerryError, type Logger } from '@ferry/protocol';
import { MEMORY_PAGE_BYTES, servePageRequests, type PageResponder, type PageRun } from '@ferry/transfer';
import { splitForPostCopy, type LazyPageIndex } from './pagemap-image';

export class LazyMemorySource {
  private constructor(
    private readonly indexes: Map<number, LazyPageIndex>,
    private readonly files: Map<number, FileHandle>,
    private responder: PageResponder | undefined,
    /** Bytes kept here for the target to fetch. */
    readonly lazyBytes: number,
    /** Bytes left in the images for the restore itself. */
    readonly eagerBytes: number,
  ) {}

  /**
   * Splits the dump in `imagesDir` (pagemap-image.ts), keeps the lazy part in `lazyDir` and starts
   * answering page requests of transfer `transferId`, sealed with `imageKey`.
   */
  static async prepare(
    nc: NatsConnection,
    transferId: string,
    imagesDir: string,
    lazyDir: string,
    imageKey: Uint8Array | null,
    log: Logger,
  ): Promise<LazyMemorySource> {
    await mkdir(lazyDir, { mode: 0o700 });
    const split = await splitForPostCopy(imagesDir, lazyDir, await readdir(imagesDir));
    const files = new Map<number, FileHandle>();
    const source = new LazyMemorySource(split.indexes, files, undefined, split.lazyBytes, split.eagerBytes);
    try {
      for (const [pid, index] of split.indexes) files.set(pid, await open(index.pagesFile, 'r'));
    } catch (err) {
      await source.close();
      throw err;
    }
    source.responder = servePageRequests(nc, transferId, (pid, vaddr, nr) => source.read(pid, vaddr, nr), { imageKey, logger: log });
    // Registered with the server before the image (and so the target's first request) can go.
    await nc.flush();
    log.info({ transferId, lazyBytes: split.lazyBytes, eagerBytes: split.eagerBytes, tasks: split.indexes.size }, 'lazy memory kept for post-copy');
    return source;
  }

  /** Page bytes sent to the target so far. */
  get bytesServed(): number {
    return this.responder?.stats().bytes ?? 0;
  }

  private async read(pid: number, vaddr: number, nr: number): Promise<PageRun> {
    const index = this.indexes.get(pid);
    const file = this.files.get(pid);
    const run = index?.locate(vaddr, nr);
    if (index === undefined || file === undefined || run === undefined) {
      throw new FerryError(ErrorCode.NOT_FOUND, `no lazy page at ${vaddr.toString(16)} of task ${pid}`);
    }
    const data = Buffer.allocUnsafe(run.nrPages * MEMORY_PAGE_BYTES);
    const { bytesRead } = await file.read(data, 0, data.length, run.offset);
    if (bytesRead !== data.length) throw new FerryError(ErrorCode.INTERNAL, `lazy pages of task ${pid} end early at ${run.offset + bytesRead}`);
    return { vaddr, nr: run.nrPages, data };
  }

  /** Stops answering and closes the pages files (the caller removes the lazy dir). */
  async close(): Promise<void> {
    this.responder?.close();
    this.responder = undefined;
    for (const fh of this.files.values()) await fh.close().catch(() => undefined);
    this.files.clear();
  }
}
