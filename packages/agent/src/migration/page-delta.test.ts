import { mkdtemp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_DELTA_HEAD_BYTES, PAGE_DELTA_MAGIC, PAGE_DELTA_OP } from '@ferry/native';
import { encodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT, pagemapEntryBytes, pagemapHeadBytes, pagemapHeader, parsePagemap } from '../criu/pagemap-image';
import { applyPageDeltas, deltaNameOf, precopyFileName, precopyRunsName } from './page-delta';

const PAGE = 4096;
const BASE = 0x7f0000000000;

/** A page filled with `tag` (distinct content per tag). */
function page(tag: number): Buffer {
  return Buffer.alloc(PAGE, tag & 0xff);
}

function head(op: number, a = 0, b = 0, c = 0): Buffer {
  const h = Buffer.alloc(PAGE_DELTA_HEAD_BYTES);
  h.writeUInt32LE(op, 0);
  h.writeUInt32LE(a, 4);
  h.writeUInt32LE(b, 8);
  h.writeUInt32LE(c, 12);
  return h;
}

const literal = (...pages: Buffer[]) => Buffer.concat([head(PAGE_DELTA_OP.LITERAL, pages.length), ...pages]);
const ref = (file: number, first: number, pages: number) => head(PAGE_DELTA_OP.REF, file, first, pages);
const end = (bytes: number) => head(PAGE_DELTA_OP.END, bytes % 2 ** 32, Math.floor(bytes / 2 ** 32));
const delta = (...records: Buffer[]) => Buffer.concat([PAGE_DELTA_MAGIC, ...records]);
const at = (page: number) => BASE + page * PAGE;

describe('applyPageDeltas', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-delta-'));
    await mkdir(join(dir, 'precopy'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  /** Pre-copy file k: `runs` as [first page number, count] (addresses BASE + n pages), `tags` its pages' content. */
  async function precopy(k: number, runs: [number, number][], tags: number[]): Promise<void> {
    await writeFile(join(dir, precopyFileName(k)), Buffer.concat(tags.map(page)));
    const raw = Buffer.alloc(runs.length * 16);
    runs.forEach(([first, n], i) => {
      raw.writeBigUInt64LE(BigInt(at(first)), i * 16);
      raw.writeBigUInt64LE(BigInt(n * PAGE), i * 16 + 8);
    });
    await writeFile(join(dir, precopyRunsName(k)), raw);
  }

  /** The task's pagemap as CRIU wrote it: runs [first page number, count, flags], pages file `pagesId`. */
  async function pagemap(taskId: number, pagesId: number, runs: [number, number, number][]): Promise<void> {
    const entries = runs.map(([first, nrPages, flags]) => pagemapEntryBytes({ vaddr: at(first), nrPages, flags }));
    await writeFile(join(dir, `pagemap-${taskId}.img`), encodePagemap({ header: pagemapHeader(), head: pagemapHeadBytes(pagesId) }, entries));
  }

  async function entriesOf(path: string): Promise<[number, number, number][]> {
    return parsePagemap(await readFile(join(dir, path))).entries.map((e) => [(e.vaddr - BASE) / PAGE, e.nrPages, e.flags]);
  }

  test('an image without deltas is left alone', async () => {
    await writeFile(join(dir, 'pages-1.img'), page(1));
    expect(await applyPageDeltas(dir, 1 << 30)).toEqual({ deltas: 0, parentPages: 0, writtenPages: 0, lazyPages: 0 });
    expect(await readFile(join(dir, 'pages-1.img'))).toEqual(page(1));
  });

  test('unchanged pages where they were go to a parent image; changed and new ones into the pages file', async () => {
    // Pre-copied: pages 0..3 and 10..11. At the freeze: page 1 changed, page 5 new, the rest the same.
    await precopy(0, [[0, 4], [10, 2]], [1, 2, 3, 4, 5, 6]);
    await pagemap(1, 1, [[0, 4, PE_PRESENT], [5, 1, PE_PRESENT], [10, 2, PE_PRESENT | PE_LAZY]]);
    await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 1), literal(page(9)), ref(0, 2, 2), literal(page(7)), ref(0, 4, 2), end(7 * PAGE)));
    expect(await applyPageDeltas(dir, 1 << 30)).toMatchObject({ deltas: 1, parentPages: 5, writtenPages: 2, lazyPages: 0 });
    // What CRIU's restore reads: PE_PARENT runs from parent/, the others from pages-1.img in order.
    expect(await entriesOf('pagemap-1.img')).toEqual([
      [0, 1, PE_PARENT],
      [1, 1, PE_PRESENT],
      [2, 2, PE_PARENT],
      [5, 1, PE_PRESENT],
      [10, 2, PE_PARENT | PE_LAZY],
    ]);
    expect(await readFile(join(dir, 'pages-1.img'))).toEqual(Buffer.concat([page(9), page(7)]));
    expect(await entriesOf('parent/pagemap-1.img')).toEqual([
      [0, 4, PE_PRESENT],
      [10, 2, PE_PRESENT],
    ]);
    expect(parsePagemap(await readFile(join(dir, 'parent/pagemap-1.img'))).pagesId).toBe(1);
    expect(await readFile(join(dir, 'parent/pages-1.img'))).toEqual(Buffer.concat([1, 2, 3, 4, 5, 6].map(page)));
    // The delta and the rest of the pre-copy are gone.
    expect((await readdir(dir)).sort()).toEqual(['pagemap-1.img', 'pages-1.img', 'parent']);
  });

  test('a page whose content moved to another address is written, not taken from the parent', async () => {
    await precopy(0, [[0, 2]], [1, 2]);
    await pagemap(1, 1, [[0, 2, PE_PRESENT]]);
    // Page 0 now holds what page 1 held, and the other way round.
    await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 1, 1), ref(0, 0, 1), end(2 * PAGE)));
    expect(await applyPageDeltas(dir, 1 << 30)).toMatchObject({ parentPages: 0, writtenPages: 2 });
    expect(await readFile(join(dir, 'pages-1.img'))).toEqual(Buffer.concat([page(2), page(1)]));
    expect(await entriesOf('pagemap-1.img')).toEqual([[0, 2, PE_PRESENT]]);
  });

  test('a lazy restore leaves the lazy runs to the daemon, served from the parent, the delta and the pre-copy', async () => {
    await precopy(0, [[0, 3]], [1, 2, 3]);
    await pagemap(1, 1, [[0, 1, PE_PRESENT], [1, 3, PE_PRESENT | PE_LAZY]]);
    await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 2), literal(page(8)), ref(0, 0, 1), end(4 * PAGE)));
    const applied = await applyPageDeltas(dir, 1 << 30, { lazy: true });
    expect(applied).toMatchObject({ parentPages: 1, writtenPages: 0, lazyPages: 3 });
    expect(await entriesOf('pagemap-1.img')).toEqual([
      [0, 1, PE_PARENT],
      [1, 3, PE_LAZY],
    ]);
    // The table lazyServe answers the daemon from (native/ts/page-delta.test.ts tests the serving).
    const { runs, files } = await applied.lazyPagesSource!.open();
    try {
      const pageAt = async (vaddr: number): Promise<Buffer> => {
        const run = runs.find((r) => vaddr >= r.vaddr && vaddr < r.vaddr + r.pages * PAGE)!;
        const buf = Buffer.alloc(PAGE);
        await files[run.file]!.read(buf, 0, PAGE, run.offset + (vaddr - run.vaddr));
        return buf;
      };
      expect(runs.every((r) => r.task === 1)).toBe(true);
      expect(runs.reduce((n, r) => n + r.pages, 0)).toBe(3);
      expect(runs.map((r) => r.vaddr)).toEqual([...runs.map((r) => r.vaddr)].sort((a, b) => a - b));
      // Page 1 from the parent, page 2 from the delta, page 3 (page 0's content) from the pre-copy file.
      expect(await pageAt(at(1))).toEqual(page(2));
      expect(await pageAt(at(2))).toEqual(page(8));
      expect(await pageAt(at(3))).toEqual(page(1));
      expect(runs.some((r) => at(9) >= r.vaddr && at(9) < r.vaddr + r.pages * PAGE)).toBe(false);
    } finally {
      await Promise.all(files.map((f) => f.close()));
    }
  });

  test('two tasks: each its own parent; a second delta into the same pre-copy file writes its pages', async () => {
    await precopy(0, [[0, 2]], [1, 2]);
    await precopy(1, [[20, 1]], [5]);
    await pagemap(1, 1, [[0, 2, PE_PRESENT]]);
    await pagemap(2, 2, [[20, 1, PE_PRESENT]]);
    await pagemap(3, 3, [[0, 1, PE_PRESENT]]);
    await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 2), end(2 * PAGE)));
    await writeFile(join(dir, deltaNameOf('pages-2.img')), delta(ref(1, 0, 1), end(PAGE)));
    await writeFile(join(dir, deltaNameOf('pages-3.img')), delta(ref(0, 1, 1), end(PAGE)));
    expect(await applyPageDeltas(dir, 1 << 30)).toMatchObject({ deltas: 3, parentPages: 3, writtenPages: 1 });
    expect(await readFile(join(dir, 'pages-3.img'))).toEqual(page(2));
    expect(await entriesOf('parent/pagemap-2.img')).toEqual([[20, 1, PE_PRESENT]]);
    expect(parsePagemap(await readFile(join(dir, 'parent/pagemap-2.img'))).pagesId).toBe(2);
  });

  test('a shared memory segment\'s pages (streamed like a task\'s) are written, never taken from a parent', async () => {
    await precopy(0, [[0, 2]], [1, 2]);
    await pagemap(1, 1, [[0, 2, PE_PRESENT]]);
    // Its pagemap lists offsets in the segment (here 0 and 1 pages), which look like addresses.
    const entries = [pagemapEntryBytes({ vaddr: 0, nrPages: 1, flags: PE_PRESENT }), pagemapEntryBytes({ vaddr: PAGE, nrPages: 1, flags: PE_PRESENT })];
    await writeFile(join(dir, 'pagemap-shmem-77.img'), encodePagemap({ header: pagemapHeader(), head: pagemapHeadBytes(2) }, entries));
    await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 2), end(2 * PAGE)));
    await writeFile(join(dir, deltaNameOf('pages-2.img')), delta(literal(page(9)), ref(0, 1, 1), end(2 * PAGE)));
    expect(await applyPageDeltas(dir, 1 << 30, { lazy: true })).toMatchObject({ deltas: 2, parentPages: 2, writtenPages: 2, lazyPages: 0 });
    expect(await readFile(join(dir, 'pages-2.img'))).toEqual(Buffer.concat([page(9), page(2)]));
    expect(parsePagemap(await readFile(join(dir, 'pagemap-shmem-77.img'))).entries.map((e) => [e.vaddr, e.nrPages, e.flags])).toEqual([
      [0, 1, PE_PRESENT],
      [PAGE, 1, PE_PRESENT],
    ]);
    expect((await readdir(join(dir, 'parent'))).sort()).toEqual(['pagemap-1.img', 'pages-1.img']);
  });

  describe('every page reads back its own content, whatever the layout (seeded random layouts)', () => {
    /** A page whose content names `tag` (page() repeats a byte; these differ beyond 256). */
    const tagged = (tag: number) => {
      const b = Buffer.alloc(PAGE, tag & 0xff);
      b.writeUInt32LE(tag, 0);
      b.writeUInt32LE(tag, PAGE - 4);
      return b;
    };
    /** A small deterministic generator (mulberry32), so a failure names its seed. */
    const random = (seed: number) => () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
    };

    test.each(Array.from({ length: 40 }, (_, i) => [i + 1, i % 2 === 1] as [number, boolean]))('seed %i (lazy: %s)', async (seed, lazy) => {
      const rnd = random(seed);
      const int = (n: number) => Math.floor(rnd() * n);
      // The pre-copy: runs over pages 0..63 with gaps, each page its own tag.
      const runs: [number, number][] = [];
      for (let p = int(3); p < 64; ) {
        const n = 1 + int(12);
        runs.push([p, Math.min(n, 64 - p)]);
        p += n + int(4);
      }
      const precopied: number[] = runs.flatMap(([first, n]) => Array.from({ length: n }, (_, i) => first + i));
      await precopy(0, runs, precopied.map((p) => 1000 + p));
      // The task at the freeze: entries over pages 0..71, some lazy, some not present.
      const entries: [number, number, number][] = [];
      for (let p = int(2); p < 72; ) {
        const n = 1 + int(9);
        const flags = rnd() < 0.1 ? 0 : rnd() < 0.5 ? PE_PRESENT | PE_LAZY : PE_PRESENT;
        entries.push([p, Math.min(n, 72 - p), flags]);
        p += n + int(3);
      }
      await pagemap(1, 1, entries);
      // Each present page: unchanged where it was, another pre-copied page's content, or new.
      const present = entries.filter(([, , f]) => f & PE_PRESENT).flatMap(([first, n]) => Array.from({ length: n }, (_, i) => first + i));
      const expected = new Map<number, Buffer>();
      const records: Buffer[] = [];
      let pending: { op: 'ref'; first: number; n: number } | { op: 'lit'; pages: Buffer[] } | undefined;
      const flush = () => {
        if (pending?.op === 'ref') records.push(ref(0, pending.first, pending.n));
        if (pending?.op === 'lit') records.push(literal(...pending.pages));
        pending = undefined;
      };
      for (const p of present) {
        const same = precopied.indexOf(p);
        const choice = rnd();
        // Often the pre-copy page after the last one referenced: a record that runs on past where
        // the addresses part (the end of a pre-copy run, a gap in the pagemap) must split there.
        const next = pending?.op === 'ref' && pending.first + pending.n < precopied.length ? pending.first + pending.n : -1;
        const index = next >= 0 && choice < 0.4 ? next : same >= 0 && choice < 0.7 ? same : choice < 0.85 && precopied.length > 0 ? int(precopied.length) : -1;
        if (index >= 0) {
          expected.set(p, tagged(1000 + precopied[index]!));
          // Records as the filter cuts them: consecutive references in one, now and then split.
          if (pending?.op === 'ref' && pending.first + pending.n === index && rnd() < 0.85) pending.n++;
          else {
            flush();
            pending = { op: 'ref', first: index, n: 1 };
          }
        } else {
          const content = tagged(5000 + p);
          expected.set(p, content);
          if (pending?.op === 'lit' && rnd() < 0.85) pending.pages.push(content);
          else {
            flush();
            pending = { op: 'lit', pages: [content] };
          }
        }
      }
      flush();
      await writeFile(join(dir, precopyFileName(0)), Buffer.concat(precopied.map((p) => tagged(1000 + p))));
      await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(...records, end(present.length * PAGE)));

      const applied = await applyPageDeltas(dir, 1 << 30, { lazy });
      expect(applied.parentPages + applied.writtenPages + applied.lazyPages).toBe(present.length);
      // Read every present page back the way CRIU would: the parent, the pages file in order, or the daemon's table.
      const rebuilt = await entriesOf('pagemap-1.img');
      const pagesFile = await readFile(join(dir, 'pages-1.img'));
      const parentRuns = applied.parentPages > 0 ? await entriesOf('parent/pagemap-1.img') : [];
      const parentPages = applied.parentPages > 0 ? await readFile(join(dir, 'parent/pages-1.img')) : Buffer.alloc(0);
      const served = lazy && applied.lazyPagesSource ? await applied.lazyPagesSource.open() : undefined;
      try {
        let written = 0;
        const got = new Map<number, Buffer>();
        for (const [first, n, flags] of rebuilt) {
          if ((flags & (PE_PRESENT | PE_PARENT | PE_LAZY)) === 0) continue;
          for (let i = 0; i < n; i++) {
            const p = first + i;
            if (flags & PE_PARENT) {
              let offset = 0;
              const run = parentRuns.find(([f, m]) => (p >= f && p < f + m ? true : ((offset += m), false)))!;
              got.set(p, parentPages.subarray((offset + p - run[0]) * PAGE, (offset + p - run[0] + 1) * PAGE));
            } else if (flags & PE_PRESENT) {
              got.set(p, pagesFile.subarray(written * PAGE, ++written * PAGE));
            } else {
              const run = served!.runs.find((r) => at(p) >= r.vaddr && at(p) < r.vaddr + r.pages * PAGE)!;
              const buf = Buffer.alloc(PAGE);
              await served!.files[run.file]!.read(buf, 0, PAGE, run.offset + (at(p) - run.vaddr));
              got.set(p, buf);
            }
          }
        }
        expect(written * PAGE).toBe(pagesFile.length);
        expect([...got.keys()].sort((a, b) => a - b)).toEqual(present);
        for (const p of present) expect(got.get(p)!.readUInt32LE(0)).toBe(expected.get(p)!.readUInt32LE(0));
        for (const p of present) expect(got.get(p)!.equals(expected.get(p)!)).toBe(true);
        // Not present at the freeze: left as it was.
        expect(rebuilt.filter(([, , f]) => (f & (PE_PRESENT | PE_PARENT | PE_LAZY)) === 0)).toEqual(entries.filter(([, , f]) => f === 0));
      } finally {
        await Promise.all(served?.files.map((f) => f.close()) ?? []);
      }
    });
  });

  describe('a hostile or broken delta is refused before anything is written', () => {
    const cases: [string, () => Buffer, RegExp][] = [
      ['bad magic', () => Buffer.concat([Buffer.from('NOTDELTA'), end(0)]), /bad magic/],
      ['no END (a cut stream)', () => delta(ref(0, 0, 1)), /cut before its END/],
      ['a reference past the pre-copy file', () => delta(ref(0, 1, 5), end(5 * PAGE)), /which has 2/],
      ['a reference to a file the image does not hold', () => delta(ref(7, 0, 1), end(PAGE)), /pre-copy file 7/],
      ['an END that disagrees', () => delta(ref(0, 0, 1), end(2 * PAGE)), /END says/],
      ['bytes after END', () => Buffer.concat([delta(ref(0, 0, 2), end(2 * PAGE)), Buffer.alloc(3)]), /after its END/],
      ['a literal run past the end', () => Buffer.concat([PAGE_DELTA_MAGIC, head(PAGE_DELTA_OP.LITERAL, 2), page(1)]), /past its end/],
      ['an oversized literal record', () => delta(head(PAGE_DELTA_OP.LITERAL, 1000), end(0)), /literal record of 1000/],
      ['an unknown record', () => delta(head(99), end(0)), /unknown record/],
      ['references that expand past the image limit', () => delta(ref(0, 0, 2), ref(0, 0, 2), ref(0, 0, 2), end(6 * PAGE)), /grows past/],
      ['more pages than the task\'s pagemap lists', () => delta(ref(0, 0, 2), ref(0, 0, 1), end(3 * PAGE)), /lists 2/],
      ['a partial page', () => delta(ref(0, 0, 2), head(PAGE_DELTA_OP.TAIL, 3), Buffer.from('abc'), end(2 * PAGE + 3)), /partial page/],
    ];
    test.each(cases)('%s', async (_what, make, message) => {
      await precopy(0, [[0, 2]], [1, 2]);
      await pagemap(1, 1, [[0, 2, PE_PRESENT]]);
      const before = await readFile(join(dir, 'pagemap-1.img'));
      await writeFile(join(dir, deltaNameOf('pages-1.img')), make());
      await expect(applyPageDeltas(dir, 5 * PAGE)).rejects.toMatchObject({ code: 'TRANSFER_FAILED', message });
      expect(await readdir(dir)).not.toContain('pages-1.img');
      expect(await readdir(dir)).not.toContain('parent');
      expect(await readFile(join(dir, 'pagemap-1.img'))).toEqual(before);
    });

    test('a delta beside the pages file it would make, or for a pages file no task names', async () => {
      await precopy(0, [[0, 1]], [1]);
      await pagemap(1, 1, [[0, 1, PE_PRESENT]]);
      await writeFile(join(dir, 'pages-1.img'), page(3));
      await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 1), end(PAGE)));
      await expect(applyPageDeltas(dir, 1 << 30)).rejects.toMatchObject({ code: 'TRANSFER_FAILED', message: /holds pages-1.img as well/ });
      await rm(join(dir, 'pages-1.img'));
      await rm(join(dir, deltaNameOf('pages-1.img')));
      await writeFile(join(dir, deltaNameOf('pages-9.img')), delta(ref(0, 0, 1), end(PAGE)));
      await expect(applyPageDeltas(dir, 1 << 30)).rejects.toMatchObject({ message: /no task's pagemap names pages-9.img/ });
    });

    test.each([
      ['runs that do not add up to the file', [[0, 3]], /runs of 3 pages for a file of 2/],
      ['runs out of order', [[5, 1], [0, 1]], /out of order/],
      ['runs beyond any address space', [[2 ** 46, 2]], /beyond any address space/],
    ] as [string, [number, number][], RegExp][])('pre-copy %s', async (_what, runs, message) => {
      await precopy(0, runs, [1, 2]);
      await pagemap(1, 1, [[0, 2, PE_PRESENT]]);
      await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(ref(0, 0, 2), end(2 * PAGE)));
      await expect(applyPageDeltas(dir, 1 << 30)).rejects.toMatchObject({ code: 'TRANSFER_FAILED', message });
    });

    test('a stray file among the pre-copied memory, or memory without its runs', async () => {
      await writeFile(join(dir, precopyFileName(0)), page(1));
      await writeFile(join(dir, deltaNameOf('pages-1.img')), delta(end(0)));
      await expect(applyPageDeltas(dir, 1 << 30)).rejects.toMatchObject({ message: /without its runs/ });
      await rm(join(dir, precopyFileName(0)));
      await writeFile(join(dir, 'precopy', 'x'), page(1));
      await expect(applyPageDeltas(dir, 1 << 30)).rejects.toMatchObject({ message: /unexpected file/ });
    });
  });
});
