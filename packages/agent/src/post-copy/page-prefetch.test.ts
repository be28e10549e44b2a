import { ErrorCode, FerryError } from '@ferry/protocol';
import { PagePrefetcher, type PrefetchOptions } from './page-prefetch';

const PAGE = 4096;
const OPTS: PrefetchOptions = { chunkPages: 4, inFlight: 2, bulkInFlight: 2, bulkChunks: 1, calmMs: 0, maxCachedBytes: 8 * PAGE, faultPages: 2, quietMs: 0 };

/** A source holding pages whose bytes are their page number; records what was asked. */
function source() {
  const asked: Array<[number, number]> = [];
  const fetch = async (pid: number, vaddr: number, nr: number) => {
    asked.push([vaddr / PAGE, nr]);
    const data = Buffer.alloc(nr * PAGE);
    for (let i = 0; i < nr; i++) data.fill(vaddr / PAGE + i, i * PAGE, (i + 1) * PAGE);
    return { vaddr, nr, data };
  };
  return { asked, fetch };
}

const settle = () => new Promise((r) => setTimeout(r, 10));

test('prefetches in address order within the cache bound and serves CRIU from it, dropping served chunks', async () => {
  const src = source();
  const p = new PagePrefetcher(src.fetch, [{ pid: 1, vaddr: 0, nrPages: 16 }], OPTS);
  p.start();
  await settle();
  // 8 pages cached at most: two chunks of four.
  expect(src.asked).toEqual([[0, 4], [4, 4]]);
  const run = await p.get(1, 0, 16);
  // Up to the end of the chunk holding the address; CRIU asks again for the rest.
  expect(run.nr).toBe(4);
  expect(run.data[3 * PAGE]).toBe(3);
  await settle();
  // The first chunk was served whole, so room for the next one.
  expect(src.asked).toEqual([[0, 4], [4, 4], [8, 4]]);
  expect(p.stats.servedFromCache).toBe(4);
  p.stop();
});

test('a fault ahead of the prefetch fetches its chunk at once', async () => {
  const src = source();
  const p = new PagePrefetcher(src.fetch, [{ pid: 1, vaddr: 0, nrPages: 64 }], { ...OPTS, quietMs: 60_000 });
  p.start();
  // No prefetch yet (quiet period): the fault at page 41 brings pages 40-43.
  const run = await p.get(1, 41 * PAGE, 1);
  expect(run).toMatchObject({ vaddr: 41 * PAGE, nr: 1 });
  expect(run.data[0]).toBe(41);
  expect(src.asked).toEqual([[40, 4]]);
  const neighbour = await p.get(1, 42 * PAGE, 1);
  expect(neighbour.data[0]).toBe(42);
  expect(src.asked).toHaveLength(1);
  // An address in no lazy run goes straight to the source.
  await p.get(2, 0, 1);
  expect(src.asked).toHaveLength(2);
  p.stop();
});

test('a failed fetch fails the request waiting for it', async () => {
  const p = new PagePrefetcher(async () => {
    throw new FerryError(ErrorCode.UNAVAILABLE, 'source gone');
  }, [{ pid: 1, vaddr: 0, nrPages: 8 }], { ...OPTS, quietMs: 60_000 });
  p.start();
  await expect(p.get(1, 0, 4)).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  p.stop();
});

test('once faults are calm, one request brings several consecutive chunks', async () => {
  const src = source();
  const p = new PagePrefetcher(src.fetch, [{ pid: 1, vaddr: 0, nrPages: 12 }, { pid: 1, vaddr: 100 * PAGE, nrPages: 4 }], { ...OPTS, bulkChunks: 2, maxCachedBytes: 64 * PAGE });
  p.start();
  await settle();
  // Chunks 0-3 and 4-7 in one request; 8-11 alone (no consecutive pending chunk in its run after it); the other run apart.
  expect(src.asked).toEqual([[0, 8], [8, 4], [100, 4]]);
  const run = await p.get(1, 4 * PAGE, 4);
  expect(run.data[0]).toBe(4);
  p.stop();
});
