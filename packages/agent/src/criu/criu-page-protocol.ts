/**
 * CRIU's page-server wire format (criu/page-xfer.c), the part post-copy speaks: requests and
 * replies are a page_server_iov header, replies followed by the pages.
 *
 *   page_server_iov {u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id}   (CRIU 4.2, little-endian)
 *   PS_IOV_GET (the lazy-pages side asks)  ->  PS_IOV_ADD_F | PE_PRESENT << 16, then nr_pages * 4096 bytes
 *   PS_IOV_CLOSE / PS_IOV_FORCE_CLOSE      ->  a 4-byte status, 0
 */
import { ErrorCode, FerryError } from '@ferry/protocol';

/** The header's size in CRIU 4.2: nr_pages became a u64 (after 4 bytes of padding). */
export const PAGE_SERVER_IOV_BYTES = 32;
export const PS_IOV_ADD_F = 6;
export const PS_IOV_GET = 7;
export const PS_IOV_CLOSE = 0x1023;
export const PS_IOV_FORCE_CLOSE = 0x1024;
export const PS_CMD_BITS = 16;
/** The pagemap flag a PS_IOV_ADD_F reply carries in its command's upper bits (pagemap-image.ts). */
export { PE_PRESENT } from './pagemap-image';

export interface PageServerIov {
  cmd: number;
  nrPages: number;
  vaddr: number;
  dstId: number;
}

function readU64(buf: Buffer, at: number): number {
  const value = buf.readBigUInt64LE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `page server request field ${value} out of range`);
  return Number(value);
}

export function decodeIov(buf: Buffer): PageServerIov {
  return { cmd: buf.readUInt32LE(0), nrPages: readU64(buf, 8), vaddr: readU64(buf, 16), dstId: readU64(buf, 24) };
}

export function encodeIov(iov: PageServerIov): Buffer {
  const buf = Buffer.alloc(PAGE_SERVER_IOV_BYTES);
  buf.writeUInt32LE(iov.cmd, 0);
  buf.writeBigUInt64LE(BigInt(iov.nrPages), 8);
  buf.writeBigUInt64LE(BigInt(iov.vaddr), 16);
  buf.writeBigUInt64LE(BigInt(iov.dstId), 24);
  return buf;
}

