/**
 * CRIU's pagemap images, read and rewritten for post-copy (criu/include/pagemap.h, images/pagemap.proto).
 *
 * A task's memory is two files: `pagemap-<pid>.img` lists runs of pages (vaddr, nr_pages, flags)
 * and `pages-<id>.img` holds the bytes of every run flagged PE_PRESENT, back to back in pagemap
 * order. A plain dump flags the runs of private anonymous memory PE_LAZY as well ("could be
 * restored lazily"); `criu restore --lazy-pages` then leaves those to the lazy-pages daemon.
 *
 * Post-copy rewrites a finished dump into the layout of CRIU's own lazy dump (which fails on this
 * kernel, see DESIGN.md): lazy runs lose PE_PRESENT and their bytes leave `pages-<id>.img`, which
 * keeps only what the restore itself must write (stacks, file-backed private pages). The original
 * pair stays on the source, where ferry serves the lazy runs on request (lazy-page-source.ts).
 *
 * The format: two little-endian u32 magics, then records of a u32 length and that many bytes of
 * protobuf, the first a pagemap_head {pages_id = 1}, the rest pagemap_entry {vaddr = 1,
 * compat_nr_pages = 2, in_parent = 3, flags = 4, nr_pages = 5}. Entries are rewritten field by
 * field, so fields this code does not know survive.
 */
import { open, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError, PAGE_BYTES } from '@ferry/protocol';

export const IMG_COMMON_MAGIC = 0x54564319;
export const PAGEMAP_MAGIC = 0x56084025;
/** Pages are in the parent (pre-dump) image. */
export const PE_PARENT = 1 << 0;
/** Pages may be restored lazily (private anonymous memory, not a stack). */
export const PE_LAZY = 1 << 1;
/** Pages are in pages-<id>.img. */
export const PE_PRESENT = 1 << 2;
/** x86-64's largest user address (5-level paging, 2^57); with 4-level it is 2^47. */
const MAX_USER_ADDRESS = 2 ** 57;

const WIRE_VARINT = 0;
const WIRE_64BIT = 1;
const WIRE_LEN = 2;
const WIRE_32BIT = 5;

interface ProtoField {
  field: number;
  wire: number;
  /** Varint fields: the value. */
  value: number;
  /** The whole field, tag included, as it was read. */
  raw: Buffer;
}

function corrupt(what: string): FerryError {
  return new FerryError(ErrorCode.INVALID_ARGUMENT, `corrupt pagemap image: ${what}`);
}

/** A varint at `at`: its value (exact up to 2^53, which covers every user-space address) and length. */
function readVarint(buf: Buffer, at: number): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const byte = buf[i];
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
  }
  throw corrupt('truncated varint');
}

function writeVarint(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw corrupt(`cannot encode ${value}`);
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

function parseFields(buf: Buffer): ProtoField[] {
  const fields: ProtoField[] = [];
  let at = 0;
  while (at < buf.length) {
    const start = at;
    const tag = readVarint(buf, at);
    at = tag.next;
    const field = Math.floor(tag.value / 8);
    const wire = tag.value % 8;
    let value = 0;
    if (wire === WIRE_VARINT) {
      const v = readVarint(buf, at);
      value = v.value;
      at = v.next;
    } else if (wire === WIRE_64BIT) at += 8;
    else if (wire === WIRE_32BIT) at += 4;
    else if (wire === WIRE_LEN) {
      const len = readVarint(buf, at);
      at = len.next + len.value;
    } else throw corrupt(`wire type ${wire}`);
    if (at > buf.length) throw corrupt('truncated field');
    fields.push({ field, wire, value, raw: buf.subarray(start, at) });
  }
  return fields;
}

export interface PagemapEntry {
  vaddr: number;
  nrPages: number;
  flags: number;
  /** The entry's protobuf bytes as read (rewritten entries are encoded afresh from these). */
  raw: Buffer;
}

export interface PagemapImage {
  /** The two magics, kept byte for byte. */
  header: Buffer;
  /** The pagemap_head record's protobuf bytes. */
  head: Buffer;
  /** Names the pages file: pages-<pagesId>.img. */
  pagesId: number;
  entries: PagemapEntry[];
}

function entryOf(raw: Buffer): PagemapEntry {
  let vaddr: number | undefined;
  let compat: number | undefined;
  let nrPages: number | undefined;
  let inParent = false;
  let flags: number | undefined;
  for (const f of parseFields(raw)) {
    if (f.wire !== WIRE_VARINT) continue;
    if (f.field === 1) vaddr = f.value;
    else if (f.field === 2) compat = f.value;
    else if (f.field === 3) inParent = f.value !== 0;
    else if (f.field === 4) flags = f.value;
    else if (f.field === 5) nrPages = f.value;
  }
  if (vaddr === undefined || (compat === undefined && nrPages === undefined)) throw corrupt('entry without vaddr or nr_pages');
  const pages = nrPages ?? compat!;
  // An image may come from another host: a run must be page-aligned and inside a user address space.
  if (vaddr % PAGE_BYTES !== 0) throw corrupt(`entry at ${vaddr.toString(16)} is not page-aligned`);
  if (vaddr + pages * PAGE_BYTES > MAX_USER_ADDRESS) throw corrupt(`entry of ${pages} pages at ${vaddr.toString(16)} ends beyond any user address space`);
  // Images from before `flags` existed say in_parent, and present otherwise.
  return { vaddr, nrPages: pages, flags: flags ?? (inParent ? PE_PARENT : PE_PRESENT), raw };
}

export function parsePagemap(buf: Buffer): PagemapImage {
  if (buf.length < 8 || buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== PAGEMAP_MAGIC) {
    throw corrupt('not a pagemap image (magic)');
  }
  const records: Buffer[] = [];
  for (let at = 8; at < buf.length; ) {
    if (at + 4 > buf.length) throw corrupt('truncated record length');
    const len = buf.readUInt32LE(at);
    if (at + 4 + len > buf.length) throw corrupt('truncated record');
    records.push(buf.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  const head = records.shift();
  if (head === undefined) throw corrupt('no pagemap_head');
  const pagesId = parseFields(head).find((f) => f.field === 1 && f.wire === WIRE_VARINT)?.value;
  if (pagesId === undefined) throw corrupt('pagemap_head without pages_id');
  return { header: buf.subarray(0, 8), head, pagesId, entries: records.map(entryOf) };
}

/** The entry's protobuf with `flags` replaced, every other field as it was. */
function withFlags(entry: PagemapEntry, flags: number): Buffer {
  const parts = parseFields(entry.raw)
    .filter((f) => f.field !== 4)
    .map((f) => f.raw);
  parts.push(writeVarint(4 * 8 + WIRE_VARINT), writeVarint(flags));
  return Buffer.concat(parts);
}

/** The entry's protobuf with `nr_pages` replaced (or added), every other field as it was. */
export function withNrPages(entry: PagemapEntry, nrPages: number): Buffer {
  const parts = parseFields(entry.raw)
    .filter((f) => f.field !== 5)
    .map((f) => f.raw);
  parts.push(writeVarint(5 * 8 + WIRE_VARINT), writeVarint(nrPages));
  return Buffer.concat(parts);
}

/**
 * A pagemap entry's protobuf for `vaddr`, `nrPages` and `flags` (both page counts: CRIU 4.x reads the
 * 64-bit nr_pages, 5, and still requires compat_nr_pages, 2), keeping any other field of `template`.
 */
export function pagemapEntryBytes(run: { vaddr: number; nrPages: number; flags: number }, template?: Buffer): Buffer {
  const kept = template ? parseFields(template).filter((f) => ![1, 2, 3, 4, 5].includes(f.field)).map((f) => f.raw) : [];
  return Buffer.concat([
    writeVarint(1 * 8 + WIRE_VARINT),
    writeVarint(run.vaddr),
    writeVarint(2 * 8 + WIRE_VARINT),
    writeVarint(Math.min(run.nrPages, 0xffffffff)),
    writeVarint(4 * 8 + WIRE_VARINT),
    writeVarint(run.flags),
    writeVarint(5 * 8 + WIRE_VARINT),
    writeVarint(run.nrPages),
    ...kept,
  ]);
}

/** A pagemap_head record naming pages-<pagesId>.img. */
export function pagemapHeadBytes(pagesId: number): Buffer {
  return Buffer.concat([writeVarint(1 * 8 + WIRE_VARINT), writeVarint(pagesId)]);
}

/** The two magics every pagemap image starts with. */
export function pagemapHeader(): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  b.writeUInt32LE(PAGEMAP_MAGIC, 4);
  return b;
}

export function encodePagemap(image: Pick<PagemapImage, 'header' | 'head'>, entries: Buffer[]): Buffer {
  const parts: Buffer[] = [image.header];
  for (const record of [image.head, ...entries]) {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(record.length, 0);
    parts.push(len, record);
  }
  return Buffer.concat(parts);
}

/** Where a run of a task's pages lies in its (original) pages file. */
export interface PageRun {
  vaddr: number;
  nrPages: number;
  /** Byte offset in pages-<id>.img. */
  offset: number;
}

/**
 * A task's lazy memory as the source keeps it: every lazy run of the original pagemap and where
 * its bytes are in the original pages file, sorted by address.
 */
export class LazyPageIndex {
  private constructor(
    readonly pid: number,
    readonly pagesFile: string,
    private readonly runs: PageRun[],
  ) {}

  static fromPagemap(pid: number, pagesFile: string, image: PagemapImage): LazyPageIndex {
    const runs: PageRun[] = [];
    let offset = 0;
    for (const e of image.entries) {
      if (!(e.flags & PE_PRESENT)) continue;
      if (e.flags & PE_LAZY) runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, offset });
      offset += e.nrPages * PAGE_BYTES;
    }
    runs.sort((a, b) => a.vaddr - b.vaddr);
    return new LazyPageIndex(pid, pagesFile, runs);
  }

  /** Runs with no pages file behind them (a lazy dump's, where CRIU holds the pages): offsets are meaningless. */
  static fromRuns(pid: number, runs: { vaddr: number; nrPages: number }[]): LazyPageIndex {
    return new LazyPageIndex(pid, '', runs.map((r) => ({ vaddr: r.vaddr, nrPages: r.nrPages, offset: 0 })).sort((a, b) => a.vaddr - b.vaddr));
  }

  get lazyPages(): number {
    return this.runs.reduce((n, r) => n + r.nrPages, 0);
  }

  /**
   * Where the pages from `vaddr` are: the run holding it, cut to at most `nrPages` pages and to
   * the end of the run (a reply may carry fewer pages than asked; CRIU asks again for the rest).
   * Undefined when no lazy run holds `vaddr`.
   */
  locate(vaddr: number, nrPages: number): PageRun | undefined {
    let lo = 0;
    let hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const run = this.runs[mid];
      const end = run.vaddr + run.nrPages * PAGE_BYTES;
      if (vaddr < run.vaddr) hi = mid - 1;
      else if (vaddr >= end) lo = mid + 1;
      else {
        if ((vaddr - run.vaddr) % PAGE_BYTES !== 0) return undefined;
        const skip = (vaddr - run.vaddr) / PAGE_BYTES;
        return { vaddr, nrPages: Math.min(nrPages, run.nrPages - skip), offset: run.offset + skip * PAGE_BYTES };
      }
    }
    return undefined;
  }
}

export interface PostCopySplit {
  /** One index per task, by the pid CRIU names its images with. */
  indexes: Map<number, LazyPageIndex>;
  /** Bytes left in the images for the restore (non-lazy pages). */
  eagerBytes: number;
  /** Bytes that stay on the source until the target asks for them. */
  lazyBytes: number;
}

const TASK_PAGEMAP = /^pagemap-(\d+)\.img$/;

/** A run of a task's lazy pages. */
export interface LazyRun {
  pid: number;
  vaddr: number;
  nrPages: number;
}

/** Their bytes. */
/**
 * Refuses lazy runs that claim more memory than `maxBytes` (the host's memory: a workload cannot
 * have more lazy memory than its target can hold): a hostile or broken image must not make the
 * target plan, index or allocate for terabytes. RESTORE_FAILED names the total.
 */
export function checkLazyRuns(runs: LazyRun[], maxBytes: number): void {
  const total = lazyRunBytes(runs);
  if (total > maxBytes) {
    throw new FerryError(ErrorCode.RESTORE_FAILED, `the image claims ${total} bytes of lazy memory, more than this host's ${maxBytes}`);
  }
}

/** Every pagemap of a dump: the tasks' and the shared memory segments' (pagemap-shmem-<id>.img). */
const ANY_PAGEMAP = /^pagemap-(?:shmem-)?\d+\.img$/;

/**
 * Refuses an image whose pagemaps together claim more memory than `maxBytes` (the host's memory;
 * a dump lists only the pages a workload had, so no real one claims more). Checked before every
 * restore, whatever the mode: CRIU itself walks a run page by page, so one hostile record of 2^40
 * pages would keep the target's restore (and every restore queued behind it) busy for days.
 * RESTORE_FAILED names the file and the total.
 */
export async function checkClaimedMemory(imagesDir: string, names: string[], maxBytes: number): Promise<void> {
  let total = 0;
  for (const name of names) {
    if (!ANY_PAGEMAP.test(name)) continue;
    let image: PagemapImage;
    try {
      image = parsePagemap(await readFile(join(imagesDir, name)));
    } catch (err) {
      throw new FerryError(ErrorCode.RESTORE_FAILED, `the image's ${name} is refused: ${(err as Error).message}`, { cause: err });
    }
    for (const e of image.entries) {
      total += e.nrPages * PAGE_BYTES;
      if (total > maxBytes) {
        throw new FerryError(ErrorCode.RESTORE_FAILED, `the image claims more than this host's ${maxBytes} bytes of memory (${name} alone lists a run of ${e.nrPages} pages)`);
      }
    }
  }
}

export function lazyRunBytes(runs: LazyRun[]): number {
  return runs.reduce((n, r) => n + r.nrPages * PAGE_BYTES, 0);
}

/**
 * The runs a post-copy image left on the source (PE_LAZY without PE_PRESENT in each
 * task's pagemap), i.e. what the target will fetch.
 */
export async function lazyRunsOf(imagesDir: string, names: string[]): Promise<LazyRun[]> {
  const runs: LazyRun[] = [];
  for (const name of names) {
    const m = TASK_PAGEMAP.exec(name);
    if (!m) continue;
    const image = parsePagemap(await readFile(join(imagesDir, name)));
    for (const e of image.entries) {
      if (e.flags & PE_LAZY && !(e.flags & PE_PRESENT)) runs.push({ pid: Number(m[1]), vaddr: e.vaddr, nrPages: e.nrPages });
    }
  }
  return runs;
}

/**
 * Rewrites the dump in `imagesDir` for a post-copy restore, moving each task's original pagemap
 * and pages file to `lazyDir` (which must exist, on the same filesystem) and leaving in
 * `imagesDir` a pagemap whose lazy runs are PE_LAZY only and a pages file with the other runs.
 * Shared-memory pagemaps (pagemap-shmem-*) are left alone: the restore fills those itself.
 */
export async function splitForPostCopy(imagesDir: string, lazyDir: string, names: string[]): Promise<PostCopySplit> {
  const indexes = new Map<number, LazyPageIndex>();
  let eagerBytes = 0;
  let lazyBytes = 0;
  for (const name of names) {
    const m = TASK_PAGEMAP.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    const image = parsePagemap(await readFile(join(imagesDir, name)));
    const pagesName = `pages-${image.pagesId}.img`;
    const keptPages = join(lazyDir, pagesName);
    await rename(join(imagesDir, pagesName), keptPages);
    await rename(join(imagesDir, name), join(lazyDir, name));
    const entries: Buffer[] = [];
    const src = await open(keptPages, 'r');
    const dst = await open(join(imagesDir, pagesName), 'wx', 0o600);
    try {
      let offset = 0;
      for (const e of image.entries) {
        const bytes = e.flags & PE_PRESENT ? e.nrPages * PAGE_BYTES : 0;
        if (e.flags & PE_PRESENT && e.flags & PE_LAZY) {
          // What CRIU's own lazy dump writes for such a run: lazy, not in the pages file.
          entries.push(withFlags(e, e.flags & ~PE_PRESENT));
          lazyBytes += bytes;
        } else {
          entries.push(e.raw);
          if (bytes > 0) {
            const buf = Buffer.allocUnsafe(bytes);
            const { bytesRead } = await src.read(buf, 0, bytes, offset);
            if (bytesRead !== bytes) throw new FerryError(ErrorCode.INTERNAL, `${pagesName} is shorter than its pagemap says`);
            await dst.write(buf);
            eagerBytes += bytes;
          }
        }
        offset += bytes;
      }
    } finally {
      await src.close();
      await dst.close();
    }
    await writeFile(join(imagesDir, name), encodePagemap(image, entries), { mode: 0o600, flag: 'wx' });
    indexes.set(pid, LazyPageIndex.fromPagemap(pid, keptPages, image));
  }
  return { indexes, eagerBytes, lazyBytes };
}
