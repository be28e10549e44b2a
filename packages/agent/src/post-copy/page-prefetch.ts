/**
 * Post-copy on the target: fetches the workload's lazy memory from the source ahead of CRIU's
 * lazy-pages daemon, so most of the daemon's requests are answered from here instead of waiting
 * one NATS round trip each.
 *
 * The daemon asks for its background runs one at a time, from 64 KiB growing to 4 MiB and back to
 * 64 KiB at every fault; a workload sweeping its memory faults on every page, which took a 256 MiB
 * workload 10 s to fill at one round trip per page. Here the lazy runs (from the received
 * pagemap) are fetched in address order, the daemon's own order, in 256 KiB chunks with a few in
 * flight, and a request is answered from the chunk holding it: at most the pages up to the chunk's
 * end (CRIU asks again for the rest). A fault in a chunk not fetched yet fetches that chunk at
 * once; its neighbours are the likeliest next faults. While faults come (a resuming workload's
 * first burst), no prefetch starts: its replies would queue ahead of theirs. Memory is bounded: a
 * chunk is dropped once every page of it was served, and prefetching pauses while
 * `maxCachedBytes` wait to be served.
 */
import { ErrorCode, FerryError } from '@ferry/protocol';
import type { PageRun } from '@ferry/transfer';
import type { PageFetcher } from './lazy-page-relay';
import { PAGE_BYTES } from '@ferry/protocol';
import type { LazyRun } from '../criu/pagemap-image';

export interface PrefetchOptions {
  /** Pages per prefetch request (1024: 4 MiB, the most CRIU itself asks for at once). */
  chunkPages: number;
  /** Prefetch requests in flight while faults are recent (each new fault waits behind them). */
  inFlight: number;
  /** Prefetch requests in flight once no fault came for `calmMs`: the bulk of the memory. */
  bulkInFlight: number;
  /** Consecutive chunks one bulk request asks for (fewer, larger messages: less CPU per byte). */
  bulkChunks: number;
  calmMs: number;
  /** Fetched bytes waiting to be served beyond which prefetching pauses. */
  maxCachedBytes: number;
  /** Requests for fewer pages than this are faults (CRIU asks for 1 page per fault). */
  faultPages: number;
  /** Prefetching starts only once no fault came for this long: a resuming workload's burst of faults gets the CPU first. */
  quietMs: number;
}

/**
 * Small chunks, few in flight while faults are recent: a fault's request queues behind the
 * prefetch replies already on the way (one NATS connection each side), so what is in flight bounds
 * its wait. 4 MiB chunks stalled a resuming 512 MiB Python workload for 0.7 s of faults (heartbeat
 * gap 1.2 s against 0.5 s of downtime); with these and the quiet period the gap is the downtime.
 */
export const DEFAULT_PREFETCH: PrefetchOptions = { chunkPages: 64, inFlight: 3, bulkInFlight: 6, bulkChunks: 4, calmMs: 1000, maxCachedBytes: 64 * 1024 * 1024, faultPages: 16, quietMs: 100 };

interface Chunk {
  pid: number;
  vaddr: number;
  nrPages: number;
  state: 'pending' | 'fetching' | 'ready' | 'served';
  fetched?: Promise<void>;
  data?: Buffer;
  servedPages: number;
}

export class PagePrefetcher {
  private readonly byPid = new Map<number, Chunk[]>();
  private readonly order: Chunk[] = [];
  private next = 0;
  private running = 0;
  private cachedBytes = 0;
  /** Faults waiting for the source now. */
  private faults = 0;
  private lastFaultAt = 0;
  private quietTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failure: FerryError | undefined;
  /** Pages served from prefetched chunks, and requests that had to go to the source themselves. */
  readonly stats = { prefetchedPages: 0, servedFromCache: 0, direct: 0, fetches: 0, fetchMs: 0 };

  constructor(
    private readonly fetch: PageFetcher,
    runs: LazyRun[],
    private readonly opts: PrefetchOptions = DEFAULT_PREFETCH,
  ) {
    const sorted = [...runs].sort((a, b) => a.pid - b.pid || a.vaddr - b.vaddr);
    for (const run of sorted) {
      for (let done = 0; done < run.nrPages; done += opts.chunkPages) {
        const chunk: Chunk = { pid: run.pid, vaddr: run.vaddr + done * PAGE_BYTES, nrPages: Math.min(opts.chunkPages, run.nrPages - done), state: 'pending', servedPages: 0 };
        this.order.push(chunk);
        const list = this.byPid.get(run.pid) ?? [];
        list.push(chunk);
        this.byPid.set(run.pid, list);
      }
    }
  }

  /** Starts fetching in the background, once the workload's first faults have calmed down. */
  start(): void {
    this.lastFaultAt = performance.now();
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.quietTimer);
    for (const c of this.order) c.data = undefined;
    this.cachedBytes = 0;
  }

  /** The pages for one request of CRIU's daemon: from a prefetched chunk, or straight from the source. */
  async get(pid: number, vaddr: number, nr: number): Promise<PageRun> {
    if (this.failure) throw this.failure;
    const chunk = this.find(pid, vaddr);
    if (chunk === undefined || chunk.state === 'served') {
      this.stats.direct += 1;
      return this.fetch(pid, vaddr, nr);
    }
    const end = chunk.vaddr + chunk.nrPages * PAGE_BYTES;
    const want = Math.min(nr, (end - vaddr) / PAGE_BYTES);
    if (chunk.state === 'pending') {
      // Fetched now, ahead of the prefetch order: a fault's neighbours are the likeliest next
      // faults (a Python heap touched 50 pages of a few chunks when it resumed). While a fault
      // waits, no new prefetch starts: it would queue ahead of the reply.
      const fault = want < this.opts.faultPages;
      if (fault) {
        this.faults += 1;
        this.lastFaultAt = performance.now();
      }
      this.begin(chunk);
      if (fault) {
        void chunk.fetched!.finally(() => {
          this.faults -= 1;
          this.pump();
        }).catch(() => undefined);
      }
    }
    await chunk.fetched;
    if (chunk.data === undefined) {
      // Dropped by stop(), or fetched and then already served (a second request for the same pages).
      this.stats.direct += 1;
      return this.fetch(pid, vaddr, want);
    }
    const from = (vaddr - chunk.vaddr) / PAGE_BYTES;
    const data = chunk.data.subarray(from * PAGE_BYTES, (from + want) * PAGE_BYTES);
    chunk.servedPages += want;
    this.stats.servedFromCache += want;
    if (chunk.servedPages >= chunk.nrPages) {
      // Every page went to CRIU once; it never asks for a page twice.
      chunk.state = 'served';
      this.cachedBytes -= chunk.data.length;
      chunk.data = undefined;
      this.pump();
    }
    return { vaddr, nr: want, data };
  }

  private find(pid: number, vaddr: number): Chunk | undefined {
    const list = this.byPid.get(pid);
    if (!list) return undefined;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = list[mid];
      if (vaddr < c.vaddr) hi = mid - 1;
      else if (vaddr >= c.vaddr + c.nrPages * PAGE_BYTES) lo = mid + 1;
      else return (vaddr - c.vaddr) % PAGE_BYTES === 0 ? c : undefined;
    }
    return undefined;
  }

  /** Fetches `chunks` (consecutive pages of one task) with one request; each is ready when it arrives. */
  private begin(...chunks: Chunk[]): void {
    this.running += 1;
    const first = chunks[0];
    const nrPages = chunks.reduce((n, c) => n + c.nrPages, 0);
    const fetched = this.fetchRange(first.pid, first.vaddr, nrPages).then(
      (data) => {
        this.running -= 1;
        if (this.stopped) return;
        for (const chunk of chunks) {
          this.stats.prefetchedPages += chunk.nrPages;
          if (chunk.servedPages >= chunk.nrPages) {
            chunk.state = 'served';
            continue;
          }
          const from = (chunk.vaddr - first.vaddr) / PAGE_BYTES;
          chunk.data = data.subarray(from * PAGE_BYTES, (from + chunk.nrPages) * PAGE_BYTES);
          chunk.state = 'ready';
          this.cachedBytes += chunk.data.length;
        }
        this.pump();
      },
      (err: unknown) => {
        this.running -= 1;
        // Only a request waiting on these chunks learns of it; the daemon's own retry goes direct.
        for (const chunk of chunks) chunk.state = 'pending';
        if (!this.failure) this.failure = err instanceof FerryError ? err : new FerryError(ErrorCode.TRANSFER_FAILED, String(err));
        throw this.failure;
      },
    );
    fetched.catch(() => undefined);
    for (const chunk of chunks) {
      chunk.state = 'fetching';
      chunk.fetched = fetched;
    }
  }

  /** `nrPages` pages from `vaddr`: the source may answer in several parts (a run boundary, its message size). */
  private async fetchRange(pid: number, vaddr: number, nrPages: number): Promise<Buffer> {
    const asked = performance.now();
    const first = await this.fetch(pid, vaddr, nrPages);
    this.stats.fetches += 1;
    this.stats.fetchMs += performance.now() - asked;
    // Nearly always the whole range in one reply: no copy then.
    if (first.nr === nrPages) return first.data;
    if (first.nr < 1) throw new FerryError(ErrorCode.TRANSFER_FAILED, `source sent no pages at ${vaddr.toString(16)}`);
    const out = Buffer.allocUnsafe(nrPages * PAGE_BYTES);
    first.data.copy(out, 0);
    for (let got = first.nr; got < nrPages; ) {
      const run = await this.fetch(pid, vaddr + got * PAGE_BYTES, nrPages - got);
      if (run.nr < 1) throw new FerryError(ErrorCode.TRANSFER_FAILED, `source sent no pages at ${(vaddr + got * PAGE_BYTES).toString(16)}`);
      run.data.copy(out, got * PAGE_BYTES);
      got += run.nr;
    }
    return out;
  }

  private pump(): void {
    const quietFor = performance.now() - this.lastFaultAt;
    if (quietFor < this.opts.quietMs) {
      if (this.quietTimer === undefined && !this.stopped) {
        this.quietTimer = setTimeout(() => {
          this.quietTimer = undefined;
          this.pump();
        }, this.opts.quietMs - quietFor + 1);
      }
      return;
    }
    const bulk = quietFor >= this.opts.calmMs;
    const inFlight = bulk ? this.opts.bulkInFlight : this.opts.inFlight;
    const group = bulk ? this.opts.bulkChunks : 1;
    while (!this.stopped && this.failure === undefined && this.faults === 0 && this.running < inFlight && this.next < this.order.length) {
      if (this.cachedBytes + this.running * group * this.opts.chunkPages * PAGE_BYTES >= this.opts.maxCachedBytes) return;
      const chunk = this.order[this.next++];
      if (chunk.state !== 'pending') continue;
      const chunks = [chunk];
      // The next pending chunks that continue it, in the same task.
      while (chunks.length < group && this.next < this.order.length) {
        const last = chunks[chunks.length - 1];
        const c = this.order[this.next];
        if (c.state !== 'pending' || c.pid !== last.pid || c.vaddr !== last.vaddr + last.nrPages * PAGE_BYTES) break;
        chunks.push(c);
        this.next += 1;
      }
      this.begin(...chunks);
    }
  }
}
