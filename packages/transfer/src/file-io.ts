/**
 * Positional reads and writes that loop until done: read(2)/write(2) may return short counts
 * (signals, large requests), and a short chunk would corrupt the image silently.
 */
import type { FileHandle } from 'node:fs/promises';

/** Fills `buffer` from `position`; returns the bytes read, fewer only at end of file. */
export async function readFully(fh: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let filled = 0;
  while (filled < buffer.byteLength) {
    const { bytesRead } = await fh.read(buffer, filled, buffer.byteLength - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/** Writes all of `data` at `position`. */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < data.byteLength) {
    const { bytesWritten } = await fh.write(data, written, data.byteLength - written, position + written);
    written += bytesWritten;
  }
}
