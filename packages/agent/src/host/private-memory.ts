/**
 * A process's private memory as CRIU's dump would write it to `pages-N.img`: the pages present in
 * its private mappings that are its own (anonymous, or copied on write from a file), found in
 * /proc/PID/smaps (which mappings hold any) and /proc/PID/pagemap (which pages). Memory pre-copy
 * (migration/memory-precopy.ts) reads these runs while the workload runs.
 *
 * It need not match CRIU's choice page for page: a page pre-copied that CRIU does not dump costs a
 * few bytes on the wire, a page CRIU dumps that was not pre-copied goes at the freeze. The target
 * rebuilds the pages file without copying only where the two line up, which they do when the same
 * pages are present (pagemap order is address order, as CRIU's).
 */
import { open, readFile } from 'node:fs/promises';
import { PAGE_BYTES } from '@ferry/protocol';

/**
 * pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst), in the entry's high 32 bits: 63
 * present; 61 file-backed or shared anonymous (not the process's own copy: CRIU does not dump it).
 */
const PM_PRESENT_HI = 1 << 31;
const PM_FILE_OR_SHARED_HI = 1 << 29;
const PAGEMAP_ENTRY_BYTES = 8;
/** pagemap is read this many entries at a time (4 MiB of entries = 2 GiB of address space). */
const PAGEMAP_BATCH = 512 * 1024;
/**
 * Mappings CRIU never dumps as pages (the kernel's own, re-made at restore), and a bound on one
 * mapping's size: a mapping this large with pages present is a reservation (a JVM's or a
 * sanitizer's), whose pagemap walk would cost more than pre-copy saves.
 */
const SPECIAL = new Set(['[vsyscall]', '[vvar]', '[vvar_vclock]', '[vdso]']);
const MAX_MAPPING_BYTES = 64 * 1024 ** 3;

export interface MemoryRuns {
  /** Little-endian u64 pairs (address, length), in address order: @ferry/native precopyRead's `runs`. */
  runs: Buffer;
  count: number;
  bytes: number;
}

/** User addresses fit 47 bits (57 with 5-level paging): exact as doubles. */
interface Mapping {
  start: number;
  end: number;
}

/** The private mappings of `pid` that hold anonymous pages, from its smaps. */
export function privateMappingsWithPages(smaps: string): Mapping[] {
  const out: Mapping[] = [];
  let current: (Mapping & { private: boolean; special: boolean }) | undefined;
  for (const line of smaps.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      current = { start: parseInt(head[1]!, 16), end: parseInt(head[2]!, 16), private: head[3]![3] === 'p', special: SPECIAL.has(head[4]!.trim()) };
      continue;
    }
    const anon = /^Anonymous:\s+(\d+) kB$/.exec(line);
    if (anon && current && current.private && !current.special && Number(anon[1]) > 0 && current.end - current.start <= MAX_MAPPING_BYTES) {
      out.push({ start: current.start, end: current.end });
    }
  }
  return out;
}

/** The runs of pages present and the process's own in `pid`'s private mappings; none if it is gone. */
export async function privateMemoryRuns(pid: number): Promise<MemoryRuns> {
  const runs: number[] = [];
  let bytes = 0;
  let smaps: string;
  try {
    smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return { runs: Buffer.alloc(0), count: 0, bytes: 0 };
  }
  const pagemap = await open(`/proc/${pid}/pagemap`, 'r');
  try {
    const buf = Buffer.alloc(PAGEMAP_BATCH * PAGEMAP_ENTRY_BYTES);
    for (const m of privateMappingsWithPages(smaps)) {
      let runStart = -1;
      let runEnd = 0;
      const last = m.end / PAGE_BYTES;
      for (let first = m.start / PAGE_BYTES; first < last; first += PAGEMAP_BATCH) {
        const count = Math.min(PAGEMAP_BATCH, last - first);
        const { bytesRead } = await pagemap.read(buf, 0, count * PAGEMAP_ENTRY_BYTES, first * PAGEMAP_ENTRY_BYTES);
        for (let i = 0; i < Math.floor(bytesRead / PAGEMAP_ENTRY_BYTES); i++) {
          const hi = buf.readUInt32LE(i * PAGEMAP_ENTRY_BYTES + 4);
          if ((hi & PM_PRESENT_HI) === 0 || (hi & PM_FILE_OR_SHARED_HI) !== 0) continue;
          const addr = (first + i) * PAGE_BYTES;
          if (runStart >= 0 && runEnd === addr) {
            runEnd = addr + PAGE_BYTES;
          } else {
            if (runStart >= 0) runs.push(runStart, runEnd - runStart);
            runStart = addr;
            runEnd = addr + PAGE_BYTES;
          }
          bytes += PAGE_BYTES;
        }
      }
      if (runStart >= 0) runs.push(runStart, runEnd - runStart);
    }
  } finally {
    await pagemap.close();
  }
  const out = Buffer.alloc(runs.length * 8);
  runs.forEach((v, i) => out.writeBigUInt64LE(BigInt(v), i * 8));
  return { runs: out, count: runs.length / 2, bytes };
}
