import { open, type FileHandle } from 'node:fs/promises';
import type { LazyServeRun } from '@ferry/native';

/**
 * A lazy restore's pages, for `criu lazy-pages --page-server`: CRIU 4.2.1's daemon cannot read a
 * parent image itself (its asynchronous reads of a parent page are queued on the parent's reader,
 * which it never flushes: the first fault from a parent hangs), so the lazy runs are served from
 * where the rebuild left them, by @ferry/native's lazyServe (lazy-memory-feed.ts).
 */
export class LocalLazyPages {
  constructor(private readonly tasks: ReadonlyMap<number, ReadonlyArray<{ vaddr: number; nrPages: number; path: string; offset: number }>>) {}

  /**
   * The runs as lazyServe's table (by task, then address; `file` indexes `files`) and the files
   * they lie in, opened for reading: the caller closes them once the daemon's session is over.
   */
  async open(): Promise<{ runs: LazyServeRun[]; files: FileHandle[] }> {
    const paths: string[] = [];
    const indexOf = new Map<string, number>();
    const runs: LazyServeRun[] = [];
    for (const task of [...this.tasks.keys()].sort((a, b) => a - b)) {
      for (const run of this.tasks.get(task)!) {
        let file = indexOf.get(run.path);
        if (file === undefined) {
          file = paths.push(run.path) - 1;
          indexOf.set(run.path, file);
        }
        runs.push({ task, vaddr: run.vaddr, pages: run.nrPages, file, offset: run.offset });
      }
    }
    const files: FileHandle[] = [];
    try {
      for (const path of paths) files.push(await open(path, 'r'));
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
    return { runs, files };
  }
}
