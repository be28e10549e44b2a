/**
 * Memory pre-copy, the target side (the source side: memory-precopy.ts). The image holds the
 * pre-copied memory (`precopy/mem-K.pages`, one per source process, with `precopy/mem-K.runs`: the
 * address runs it was read from, little-endian u64 pairs of address and length) and, for each
 * pages image the dump streamed, its delta (`pages-N.img.delta`, @ferry/native dedupPages'
 * format): literal pages and references to pre-copied ones. Before the restore each delta becomes
 * what CRIU reads, without copying the memory that did not change: CRIU's own incremental images.
 * A page referenced at the very address it was pre-copied from goes into a parent image
 * (`parent/pagemap-<id>.img` listing the pre-copied runs, `parent/pages-<K+1>.img` = the pre-copy
 * file, renamed) and the task's pagemap flags it PE_PARENT, as `criu dump --prev-images-dir` would;
 * every other page (changed, new, or moved) is written into a new `pages-N.img` beside it. `criu
 * restore` and `criu lazy-pages` read a PE_PARENT run from the parent (criu/pagemap.c,
 * read_parent_page), so the work here grows with what changed, not with the memory.
 *
 * The delta and the runs come from the source agent, sealed under the migration's key, and are
 * still checked like any bytes from another host: records bounded by the file, every reference by
 * the pre-copy file it names (paths derived here: `precopy/mem-K.*`, K a number), the pages by the
 * task's pagemap and the image limit, runs sorted, aligned and adding up to their file; a delta
 * without its END record is a cut stream. Any of it fails the restore, which rolls back.
 */
import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_DELTA_HEAD_BYTES, PAGE_DELTA_MAGIC, PAGE_DELTA_OP } from '@ferry/native';
import { ErrorCode, FerryError, PAGE_BYTES } from '@ferry/protocol';
import { encodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT, pagemapEntryBytes, pagemapHeadBytes, pagemapHeader, parsePagemap, type PagemapImage } from '../criu/pagemap-image';
import { LocalLazyPages } from './local-lazy-pages';

export const PRECOPY_DIR = 'precopy';
const PRECOPY_NAME = /^mem-(\d{1,5})\.(pages|runs)$/;
/** A task's pagemap, or a shared memory segment's (its pages stream like a task's; never a parent's). */
const TASK_PAGEMAP = /^pagemap-(shmem-)?(\d+)\.img$/;
/** CRIU's name for the previous dump's images inside an images dir (criu/image.c, CR_PARENT_LINK). */
export const PARENT_DIR = 'parent';
/** No user address space reaches this (5-level paging: 57 bits). */
const MAX_USER_ADDRESS = 2 ** 57;
const DELTA_NAME = /^(pages-\d+\.img)\.delta$/;
/** Bytes moved per read/write when copying runs and literal pages. */
const COPY_BYTES = 1024 * 1024;

/** The name pre-copy file `index` has in the image. */
export function precopyFileName(index: number): string {
  return `${PRECOPY_DIR}/mem-${index}.pages`;
}

/** pages_id of the parent pagemap whose pages are pre-copy file `index`, once renamed into `parent/`. */
function parentPagesId(index: number): number {
  return index + 1;
}

/** Where pre-copy file `index` is once it became a parent's pages file. */
function parentPagesPath(dir: string, index: number): string {
  return join(dir, PARENT_DIR, `pages-${parentPagesId(index)}.img`);
}

/** The name of the address runs pre-copy file `index` was read from. */
export function precopyRunsName(index: number): string {
  return `${PRECOPY_DIR}/mem-${index}.runs`;
}

/** The name a pages image's delta has in the image. */
export function deltaNameOf(pagesName: string): string {
  return `${pagesName}.delta`;
}

type DeltaRecord =
  | { op: 'literal'; pages: number; at: number }
  | { op: 'ref'; file: number; first: number; pages: number }
  | { op: 'tail'; bytes: number; at: number };


function bad(name: string, what: string): FerryError {
  return new FerryError(ErrorCode.TRANSFER_FAILED, `memory delta ${name}: ${what}; refused`);
}

/**
 * The records of one delta, checked as they are read: bounds, references, END. Read twice (to
 * check and plan, then to apply) rather than held: a delta may hold millions of them.
 */
async function* deltaRecords(fh: FileHandle, name: string, files: ReadonlyMap<number, PrecopyFile>, maxOutBytes: number): AsyncGenerator<DeltaRecord, number> {
  const size = (await fh.stat()).size;
  const head = Buffer.alloc(PAGE_DELTA_HEAD_BYTES);
  const magic = Buffer.alloc(PAGE_DELTA_MAGIC.length);
  if ((await fh.read(magic, 0, magic.length, 0)).bytesRead !== magic.length || !magic.equals(PAGE_DELTA_MAGIC)) throw bad(name, 'not a page delta (bad magic)');
  let pos = magic.length;
  let outPages = 0;
  let tail = 0;
  for (;;) {
    if (pos + PAGE_DELTA_HEAD_BYTES > size) throw bad(name, 'cut before its END record');
    await fh.read(head, 0, PAGE_DELTA_HEAD_BYTES, pos);
    pos += PAGE_DELTA_HEAD_BYTES;
    const [op, a, b, c] = [head.readUInt32LE(0), head.readUInt32LE(4), head.readUInt32LE(8), head.readUInt32LE(12)];
    if (tail > 0 && op !== PAGE_DELTA_OP.END) throw bad(name, 'a record after its partial page');
    if (op === PAGE_DELTA_OP.END) {
      const total = a + b * 2 ** 32;
      if (c !== 0 || total !== outPages * PAGE_BYTES + tail) throw bad(name, `END says ${total} bytes, its records make ${outPages * PAGE_BYTES + tail}`);
      if (pos !== size) throw bad(name, 'bytes after its END record');
      return total;
    }
    if (op === PAGE_DELTA_OP.LITERAL) {
      if (a < 1 || a > 256 || b !== 0 || c !== 0) throw bad(name, `a literal record of ${a} pages`);
      if (pos + a * PAGE_BYTES > size) throw bad(name, 'a literal run past its end');
      yield { op: 'literal', pages: a, at: pos };
      pos += a * PAGE_BYTES;
      outPages += a;
    } else if (op === PAGE_DELTA_OP.REF) {
      const filePages = files.get(a)?.pages;
      if (filePages === undefined) throw bad(name, `a reference to pre-copy file ${a}, which the image does not hold`);
      if (c < 1 || b + c > filePages) throw bad(name, `a reference to pages ${b}..${b + c} of pre-copy file ${a}, which has ${filePages}`);
      yield { op: 'ref', file: a, first: b, pages: c };
      outPages += c;
    } else if (op === PAGE_DELTA_OP.TAIL) {
      if (a < 1 || a >= PAGE_BYTES || b !== 0 || c !== 0) throw bad(name, `a partial page of ${a} bytes`);
      if (pos + a > size) throw bad(name, 'a partial page past its end');
      yield { op: 'tail', bytes: a, at: pos };
      pos += a;
      tail = a;
    } else {
      throw bad(name, `an unknown record (op ${op})`);
    }
    if (outPages * PAGE_BYTES + tail > maxOutBytes) throw bad(name, `it grows past ${maxOutBytes} bytes`);
  }
}

/** One pre-copy file: its pages, and the address each came from. */
interface PrecopyFile {
  index: number;
  pages: number;
  /** Run starts (addresses) and the page index each run starts at, in order. */
  runStart: number[];
  runFirstPage: number[];
  runPages: number[];
}

/** Reads and checks `precopy/mem-K.runs` against its pages file. */
async function readPrecopyFile(dir: string, index: number): Promise<PrecopyFile> {
  const name = precopyRunsName(index);
  const pagesSize = (await stat(join(dir, precopyFileName(index))).catch(() => undefined))?.size;
  if (pagesSize === undefined) throw bad(name, 'runs without their pages file');
  if (pagesSize % PAGE_BYTES !== 0) throw bad(precopyFileName(index), 'pre-copied memory that is not whole pages');
  const raw = await readFile(join(dir, name)).catch(() => undefined);
  if (raw === undefined) throw bad(precopyFileName(index), 'pre-copied memory without its runs');
  if (raw.length % 16 !== 0) throw bad(name, 'runs that are not pairs of 64-bit numbers');
  const file: PrecopyFile = { index, pages: pagesSize / PAGE_BYTES, runStart: [], runFirstPage: [], runPages: [] };
  let pages = 0;
  let previousEnd = 0;
  for (let at = 0; at < raw.length; at += 16) {
    const start = Number(raw.readBigUInt64LE(at));
    const length = Number(raw.readBigUInt64LE(at + 8));
    if (start % PAGE_BYTES !== 0 || length % PAGE_BYTES !== 0 || length === 0) throw bad(name, 'a run that is not whole pages');
    if (start < previousEnd || start + length > MAX_USER_ADDRESS) throw bad(name, 'runs out of order, overlapping or beyond any address space');
    file.runStart.push(start);
    file.runFirstPage.push(pages);
    file.runPages.push(length / PAGE_BYTES);
    pages += length / PAGE_BYTES;
    previousEnd = start + length;
  }
  if (pages !== file.pages) throw bad(name, `runs of ${pages} pages for a file of ${file.pages}`);
  return file;
}

/**
 * Where page `page` of a pre-copy file came from, and how many pages from it on its run still
 * holds (they came from the addresses after it); `hint` is the run to start looking at (pages are
 * asked for in order).
 */
function runAt(file: PrecopyFile, page: number, hint: { run: number }): { address: number; pagesLeft: number } {
  let r = hint.run;
  if (r >= file.runStart.length || file.runFirstPage[r]! > page) r = 0;
  while (r + 1 < file.runStart.length && file.runFirstPage[r + 1]! <= page) r++;
  hint.run = r;
  return { address: file.runStart[r]! + (page - file.runFirstPage[r]!) * PAGE_BYTES, pagesLeft: file.runFirstPage[r]! + file.runPages[r]! - page };
}

export interface AppliedDeltas {
  deltas: number;
  /** Pages read from a parent image (unchanged since the pre-copy, where they were). */
  parentPages: number;
  /** Pages written into the new pages files (changed, new or moved). */
  writtenPages: number;
  /** Lazy restores: pages left for CRIU's lazy-pages daemon, which `lazyPages` serves. */
  lazyPages: number;
  lazyPagesSource?: LocalLazyPages;
}

/** What one delta turns into: the task's new pagemap, and the pre-copy file that becomes its parent's pages. */
interface Rebuilt {
  pagesName: string;
  pagemapName: string;
  taskId: number;
  pagemap: PagemapImage;
  entries: Buffer[];
  parent: PrecopyFile | undefined;
  parentPages: number;
  writtenPages: number;
  lazyPages: number;
  /** Lazy restores: the task's lazy pages, where each lies (served to CRIU's daemon by LocalLazyPages). */
  lazy: LazySegment[];
}

/** A run of a task's lazy pages and where its bytes are: the delta, or a pre-copy file (by index, wherever it is now). */
interface LazySegment {
  vaddr: number;
  nrPages: number;
  file: 'delta' | number;
  offset: number;
}

/** A run of bytes to copy into the new pages file. */
interface Copy {
  from: 'delta' | number;
  at: number;
  length: number;
}

/**
 * Rebuilds every pages image the image holds as a delta (see above), then removes the deltas and
 * what is left of the pre-copy. Nothing to do for an image without deltas. `maxOutBytes` bounds
 * the pages files together (the image limit).
 */
export async function applyPageDeltas(dir: string, maxOutBytes: number, { lazy = false }: { lazy?: boolean } = {}): Promise<AppliedDeltas> {
  const names = await readdir(dir);
  const deltaNames = names.filter((n) => DELTA_NAME.test(n));
  const result: AppliedDeltas = { deltas: deltaNames.length, parentPages: 0, writtenPages: 0, lazyPages: 0 };
  if (deltaNames.length === 0) return result;
  const precopyDir = join(dir, PRECOPY_DIR);
  const files = new Map<number, PrecopyFile>();
  for (const n of await readdir(precopyDir).catch(() => [] as string[])) {
    const m = PRECOPY_NAME.exec(n);
    if (!m) throw bad(n, 'an unexpected file among the pre-copied memory');
    if (m[2] === 'pages') files.set(Number(m[1]), await readPrecopyFile(dir, Number(m[1])));
  }
  // Each task's pagemap names its pages file (pagemap_head.pages_id).
  const pagemaps = new Map<number, { name: string; taskId: number; shmem: boolean; image: PagemapImage }>();
  for (const n of names) {
    const m = TASK_PAGEMAP.exec(n);
    if (!m) continue;
    const image = parsePagemap(await readFile(join(dir, n)));
    if (pagemaps.has(image.pagesId)) throw bad(n, `a second pagemap naming pages-${image.pagesId}.img`);
    pagemaps.set(image.pagesId, { name: n, taskId: Number(m[2]), shmem: m[1] !== undefined, image });
  }
  const rebuilt: Rebuilt[] = [];
  const taken = new Set<number>();
  let budget = maxOutBytes;
  for (const name of deltaNames) {
    const pagesName = DELTA_NAME.exec(name)![1]!;
    if (names.includes(pagesName)) throw bad(name, `the image holds ${pagesName} as well`);
    const task = pagemaps.get(Number(/\d+/.exec(pagesName)![0]));
    if (!task) throw bad(name, `no task's pagemap names ${pagesName}`);
    const r = await rebuildPages(dir, name, pagesName, task, files, taken, budget, lazy);
    budget -= (r.parentPages + r.writtenPages + r.lazyPages) * PAGE_BYTES;
    rebuilt.push(r);
  }
  // Every new pages file is written (they read the pre-copy files as they came): now the parents.
  for (const r of rebuilt) {
    if (r.parent) {
      await mkdir(join(dir, PARENT_DIR), { recursive: true, mode: 0o700 });
      await rename(join(dir, precopyFileName(r.parent.index)), parentPagesPath(dir, r.parent.index));
      const entries = r.parent.runStart.map((start, i) => pagemapEntryBytes({ vaddr: start, nrPages: r.parent!.runPages[i]!, flags: PE_PRESENT }));
      await writeFile(join(dir, PARENT_DIR, `pagemap-${r.taskId}.img`), encodePagemap({ header: pagemapHeader(), head: pagemapHeadBytes(parentPagesId(r.parent.index)) }, entries), { mode: 0o600 });
    }
    await writeFile(join(dir, r.pagemapName), encodePagemap(r.pagemap, r.entries), { mode: 0o600 });
    result.parentPages += r.parentPages;
    result.writtenPages += r.writtenPages;
    result.lazyPages += r.lazyPages;
  }
  if (lazy) {
    // The lazy pages are read from the deltas and the pre-copy until the daemon has them all; the
    // work dir goes with the migration. A pre-copy file that became a parent's pages is there now.
    const parents = new Set(rebuilt.flatMap((r) => (r.parent ? [r.parent.index] : [])));
    const precopyPath = (index: number) => (parents.has(index) ? parentPagesPath(dir, index) : join(dir, precopyFileName(index)));
    result.lazyPagesSource = new LocalLazyPages(
      new Map(
        rebuilt.map((r) => [
          r.taskId,
          r.lazy.map((l) => ({
            vaddr: l.vaddr,
            nrPages: l.nrPages,
            offset: l.offset,
            path: l.file === 'delta' ? join(dir, deltaNameOf(r.pagesName)) : precopyPath(l.file),
          })),
        ]),
      ),
    );
    return result;
  }
  await Promise.all(deltaNames.map((n) => rm(join(dir, n), { force: true })));
  await rm(precopyDir, { recursive: true, force: true });
  return result;
}

/**
 * One delta against its task's pagemap: walks the task's present pages (their addresses) beside
 * the delta's records, splits each run into pages the parent has at that address (PE_PARENT) and
 * pages written into the new pages file, and writes that file.
 */
async function rebuildPages(
  dir: string,
  name: string,
  pagesName: string,
  task: { name: string; taskId: number; shmem: boolean; image: PagemapImage },
  files: ReadonlyMap<number, PrecopyFile>,
  taken: Set<number>,
  maxOutBytes: number,
  lazy: boolean,
): Promise<Rebuilt> {
  const delta = await open(join(dir, name), 'r');
  try {
    // Pass 1: the whole delta checked before anything is written; its first reference names the parent.
    let firstRef: number | undefined;
    let outPages = 0;
    for await (const r of deltaRecords(delta, name, files, maxOutBytes)) {
      if (r.op === 'tail') throw bad(name, 'a partial page (a pages image is whole pages)');
      if (r.op === 'ref') firstRef ??= r.file;
      outPages += r.pages;
    }
    const present = task.image.entries.filter((e) => (e.flags & PE_PRESENT) !== 0).reduce((n, e) => n + e.nrPages, 0);
    if (present !== outPages) throw bad(name, `${outPages} pages for a task whose pagemap lists ${present}`);
    // A shared memory segment's pagemap lists offsets in the segment, not addresses: no parent for it.
    const parent = firstRef !== undefined && !taken.has(firstRef) && !task.shmem ? files.get(firstRef) : undefined;
    if (parent) taken.add(parent.index);
    // Pass 2: each present page's place: in the parent (unchanged, where it was), left to the lazy
    // daemon (a lazy restore's lazy runs), or written into the new pages file. Taken a stretch at a
    // time, where a record, a pagemap entry and (for a reference into the parent) its run all go on
    // together, so the pages within share their fate: a page at a time cost the freeze 124 ms per
    // 512 MiB (131,072 pages through JavaScript), while the workload was stopped.
    const kinds: KindRun[] = [];
    const copies: Copy[] = [];
    const lazyRuns: LazySegment[] = [];
    const hint = { run: 0 };
    let entry = 0;
    let inEntry = 0;
    const entries = task.image.entries;
    const pushKind = (kind: PageKind, pages: number) => {
      const last = kinds[kinds.length - 1];
      if (last && last.kind === kind) last.pages += pages;
      else kinds.push({ kind, pages });
    };
    const copy = (from: 'delta' | number, at: number, length: number) => {
      const last = copies[copies.length - 1];
      if (last && last.from === from && last.at + last.length === at) last.length += length;
      else copies.push({ from, at, length });
    };
    const lazyRun = (vaddr: number, file: LazySegment['file'], offset: number, nrPages: number) => {
      const last = lazyRuns[lazyRuns.length - 1];
      if (last && last.file === file && last.vaddr + last.nrPages * PAGE_BYTES === vaddr && last.offset + last.nrPages * PAGE_BYTES === offset) last.nrPages += nrPages;
      else lazyRuns.push({ vaddr, nrPages, file, offset });
    };
    let usesParent = false;
    for await (const r of deltaRecords(delta, name, files, maxOutBytes)) {
      if (r.op === 'tail') continue;
      for (let t = 0; t < r.pages; ) {
        // The next present page (pass 1 made sure the pagemap lists as many as the delta carries).
        while ((entries[entry]!.flags & PE_PRESENT) === 0 || inEntry >= entries[entry]!.nrPages) {
          entry++;
          inEntry = 0;
        }
        const e = entries[entry]!;
        const address = e.vaddr + inEntry * PAGE_BYTES;
        let n = Math.min(r.pages - t, e.nrPages - inEntry);
        let inParent = false;
        if (r.op === 'ref' && parent !== undefined && r.file === parent.index) {
          const from = runAt(parent, r.first + t, hint);
          n = Math.min(n, from.pagesLeft);
          inParent = from.address === address;
        }
        const source = r.op === 'literal' ? 'delta' : r.file;
        const at = r.op === 'literal' ? r.at + t * PAGE_BYTES : (r.first + t) * PAGE_BYTES;
        if (lazy && !task.shmem && (e.flags & PE_LAZY) !== 0) {
          pushKind('lazy', n);
          lazyRun(address, source, at, n);
          usesParent ||= inParent;
        } else if (inParent) {
          pushKind('parent', n);
          usesParent = true;
        } else {
          pushKind('written', n);
          copy(source, at, n * PAGE_BYTES);
        }
        inEntry += n;
        t += n;
      }
    }
    const writtenPages = await writeCopies(dir, join(dir, pagesName), delta, copies);
    return {
      pagesName,
      pagemapName: task.name,
      taskId: task.taskId,
      pagemap: task.image,
      entries: splitEntries(entries, kinds),
      parent: usesParent ? parent : undefined,
      parentPages: kinds.reduce((n, k) => n + (k.kind === 'parent' ? k.pages : 0), 0),
      lazyPages: kinds.reduce((n, k) => n + (k.kind === 'lazy' ? k.pages : 0), 0),
      writtenPages,
      lazy: lazyRuns,
    };
  } finally {
    await delta.close();
  }
}

/** Writes the new pages file from its runs; returns its pages. */
async function writeCopies(dir: string, path: string, delta: FileHandle, copies: Copy[]): Promise<number> {
  const out = await open(path, 'wx', 0o600);
  const sources = new Map<number, FileHandle>();
  const buf = Buffer.alloc(COPY_BYTES);
  let pos = 0;
  try {
    for (const c of copies) {
      let from = c.from === 'delta' ? delta : sources.get(c.from);
      if (!from) {
        from = await open(join(dir, precopyFileName(c.from as number)), 'r');
        sources.set(c.from as number, from);
      }
      await copyRange(from, c.at, out, pos, c.length, buf);
      pos += c.length;
    }
  } finally {
    await Promise.all([out.close(), ...[...sources.values()].map((s) => s.close())]);
  }
  return pos / PAGE_BYTES;
}

/** Where a present page of the task goes: see rebuildPages. */
type PageKind = 'parent' | 'written' | 'lazy';
/** Consecutive present pages (across entries) that go the same way. */
interface KindRun {
  kind: PageKind;
  pages: number;
}

/**
 * The task's pagemap entries with each present run split by where its pages went: the parent
 * (PE_PARENT, lazy as before), the new pages file (as before), or the lazy daemon (PE_LAZY alone,
 * as a lazy dump leaves them: the restore skips them, the daemon asks its page server).
 */
function splitEntries(entries: PagemapImage['entries'], kinds: readonly KindRun[]): Buffer[] {
  const out: Buffer[] = [];
  let run = 0;
  let usedOfRun = 0;
  for (const e of entries) {
    if ((e.flags & PE_PRESENT) === 0) {
      out.push(e.raw);
      continue;
    }
    for (let start = 0; start < e.nrPages; ) {
      while (usedOfRun >= kinds[run]!.pages) {
        run++;
        usedOfRun = 0;
      }
      const { kind, pages } = kinds[run]!;
      const n = Math.min(e.nrPages - start, pages - usedOfRun);
      const flags = kind === 'parent' ? PE_PARENT | (e.flags & PE_LAZY) : kind === 'lazy' ? PE_LAZY : e.flags;
      out.push(pagemapEntryBytes({ vaddr: e.vaddr + start * PAGE_BYTES, nrPages: n, flags }, e.raw));
      start += n;
      usedOfRun += n;
    }
  }
  return out;
}

/** Copies `length` bytes from `from` at `fromPos` to `to` at `toPos`. */
async function copyRange(from: FileHandle, fromPos: number, to: FileHandle, toPos: number, length: number, buf: Buffer): Promise<void> {
  for (let done = 0; done < length; ) {
    const n = Math.min(buf.length, length - done);
    const { bytesRead } = await from.read(buf, 0, n, fromPos + done);
    if (bytesRead !== n) throw new FerryError(ErrorCode.TRANSFER_FAILED, "a memory delta's source file ended early");
    await to.write(buf, 0, n, toPos + done);
    done += n;
  }
}
