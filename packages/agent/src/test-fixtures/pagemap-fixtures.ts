/** Test support: CRIU pagemap records built by hand, as CRIU 4.2 writes them. */
import { IMG_COMMON_MAGIC, PAGEMAP_MAGIC } from '../criu/pagemap-image';

/** A protobuf varint. */
export function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** pagemap_entry as CRIU 4.2 writes it: vaddr, compat_nr_pages, flags, nr_pages. */
export function pagemapEntry(vaddr: number, nrPages: number, flags: number): Buffer {
  return Buffer.from([0x08, ...varint(vaddr), 0x10, ...varint(nrPages), 0x20, ...varint(flags), 0x28, ...varint(nrPages)]);
}

/** The 8-byte image header of a pagemap. */
export function pagemapHeader(): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  h.writeUInt32LE(PAGEMAP_MAGIC, 4);
  return h;
}
