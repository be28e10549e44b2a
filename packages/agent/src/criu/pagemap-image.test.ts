import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@ferry/protocol';
import {
  checkClaimedMemory,
  encodePagemap,
  lazyRunsOf,
  parsePagemap,
  PE_LAZY,
  PE_PRESENT,
  splitForPostCopy,
  withNrPages,
} from './pagemap-image';
import { PAGE_BYTES } from '@ferry/protocol';
import { pagemapEntry, pagemapHeader } from '../test-fixtures/pagemap-fixtures';

const entry = pagemapEntry;
const header = pagemapHeader;

/** Page `n` of the test image: every byte is n. */
function page(n: number): Buffer {
  return Buffer.alloc(PAGE_BYTES, n);
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-pagemap-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Task 1: 2 stack-like pages (present), 3 lazy pages, 1 present page; pages file 6 pages. */
async function writeDump(images: string): Promise<void> {
  await mkdir(images, { recursive: true });
  const entries = [entry(0x7fff0000_0000, 2, PE_PRESENT), entry(0x5600_0000_0000, 3, PE_PRESENT | PE_LAZY), entry(0x5600_0001_0000, 1, PE_PRESENT)];
  await writeFile(join(images, 'pagemap-1.img'), encodePagemap({ header: header(), head: Buffer.from([0x08, 0x07]) }, entries));
  await writeFile(join(images, 'pages-7.img'), Buffer.concat([0, 1, 2, 3, 4, 5].map(page)));
  await writeFile(join(images, 'core-1.img'), 'core');
}

test('parses what CRIU writes: the head names the pages file, entries keep vaddr, count and flags', () => {
  const image = parsePagemap(encodePagemap({ header: header(), head: Buffer.from([0x08, 0x07]) }, [entry(0x7f12_3456_7000, 300, PE_PRESENT | PE_LAZY)]));
  expect(image.pagesId).toBe(7);
  expect(image.entries).toEqual([expect.objectContaining({ vaddr: 0x7f12_3456_7000, nrPages: 300, flags: PE_PRESENT | PE_LAZY })]);
});

test('a file that is not a pagemap, or is cut short, is INVALID_ARGUMENT', () => {
  expect(() => parsePagemap(Buffer.from('not a pagemap at all'))).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  const whole = encodePagemap({ header: header(), head: Buffer.from([0x08, 0x01]) }, [entry(0x1000, 1, PE_PRESENT)]);
  expect(() => parsePagemap(whole.subarray(0, whole.length - 3))).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
});

test('post-copy split: lazy runs leave the pages file and lose PE_PRESENT; the original pair moves to the lazy dir', async () => {
  const images = join(dir, 'img');
  const lazy = join(dir, 'lazy');
  await writeDump(images);
  await mkdir(lazy);
  const split = await splitForPostCopy(images, lazy, await readdir(images));

  expect(split.eagerBytes).toBe(3 * PAGE_BYTES);
  expect(split.lazyBytes).toBe(3 * PAGE_BYTES);
  // What the restore reads: the two stack pages, then the last present page; no lazy bytes.
  expect(await readFile(join(images, 'pages-7.img'))).toEqual(Buffer.concat([page(0), page(1), page(5)]));
  const rewritten = parsePagemap(await readFile(join(images, 'pagemap-1.img')));
  expect(rewritten.pagesId).toBe(7);
  expect(rewritten.entries.map((e) => [e.vaddr, e.nrPages, e.flags])).toEqual([
    [0x7fff0000_0000, 2, PE_PRESENT],
    [0x5600_0000_0000, 3, PE_LAZY],
    [0x5600_0001_0000, 1, PE_PRESENT],
  ]);
  // Fields the rewrite does not touch survive (nr_pages, field 5).
  expect(rewritten.entries[1].raw.includes(Buffer.from([0x28, 3]))).toBe(true);
  expect((await readdir(lazy)).sort()).toEqual(['pagemap-1.img', 'pages-7.img']);
  expect(await readFile(join(images, 'core-1.img'), 'utf8')).toBe('core');

  // The source's index finds each lazy page in the original pages file (after the 2 stack pages).
  const index = split.indexes.get(1)!;
  expect(index.lazyPages).toBe(3);
  expect(index.locate(0x5600_0000_0000, 10)).toEqual({ vaddr: 0x5600_0000_0000, nrPages: 3, offset: 2 * PAGE_BYTES });
  expect(index.locate(0x5600_0000_0000 + PAGE_BYTES, 1)).toEqual({ vaddr: 0x5600_0000_0000 + PAGE_BYTES, nrPages: 1, offset: 3 * PAGE_BYTES });
  expect(index.locate(0x7fff0000_0000, 1)).toBeUndefined();
  expect(index.locate(0x5600_0000_0000 + 1, 1)).toBeUndefined();

  // The target reads the lazy runs back from the rewritten pagemap.
  expect(await lazyRunsOf(images, await readdir(images))).toEqual([{ pid: 1, vaddr: 0x5600_0000_0000, nrPages: 3 }]);
});

test('an image whose pagemaps claim more memory than the host has is refused before any restore (RESTORE_FAILED), a real one passes', async () => {
  await writeDump(dir);
  const names = await readdir(dir);
  await expect(checkClaimedMemory(dir, names, 6 * PAGE_BYTES)).resolves.toBeUndefined();
  await expect(checkClaimedMemory(dir, names, 5 * PAGE_BYTES)).rejects.toMatchObject({ code: ErrorCode.RESTORE_FAILED });
  // One record rewritten to 2^40 pages (what a compromised source sends): every other field kept.
  const image = parsePagemap(await readFile(join(dir, 'pagemap-1.img')));
  const huge = withNrPages(image.entries[1]!, 2 ** 40);
  await writeFile(join(dir, 'pagemap-1.img'), encodePagemap(image, [image.entries[0]!.raw, huge, image.entries[2]!.raw]));
  expect(parsePagemap(await readFile(join(dir, 'pagemap-1.img'))).entries[1]).toMatchObject({ vaddr: 0x5600_0000_0000, nrPages: 2 ** 40, flags: PE_PRESENT | PE_LAZY });
  await expect(checkClaimedMemory(dir, names, 64 * 1024 ** 3)).rejects.toMatchObject({
    code: ErrorCode.RESTORE_FAILED,
    message: expect.stringMatching(/pagemap-1\.img alone lists a run of 1099511627776 pages/),
  });
  // A pagemap that does not parse is the image's fault too.
  await writeFile(join(dir, 'pagemap-shmem-3.img'), 'not a pagemap');
  await expect(checkClaimedMemory(dir, await readdir(dir), 64 * 1024 ** 3)).rejects.toMatchObject({ code: ErrorCode.RESTORE_FAILED, message: expect.stringMatching(/pagemap-1\.img|pagemap-shmem-3\.img/) });
});
