/**
 * Live image files where the transfer cannot stream them (no pumped direct path): each is read to
 * its end and written into the image directory, to be sent with the rest once the dump is over.
 * That is the dump ferry would have done without the streamer; the migration still works, only
 * without the overlap.
 */
import { constants, read } from 'node:fs';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { writeFully } from './file-io';
import type { LiveImageFile } from './image-frames';
import { resolveImagePath } from './image-path';

const readFd = promisify(read);

/** Reads of a pipe at a time: as much as a pipe CRIU writes into holds at most (1 MiB). */
const SPILL_READ_BYTES = 1024 * 1024;

/**
 * Writes every live file into `dir` under its name (never over an existing one, never through a
 * symlink) with its mode. `failed` is asked between reads: once the transfer has failed the spill
 * stops, and the owner of the descriptors closes them, which fails CRIU's writes.
 */
export async function spillLiveFiles(live: AsyncIterable<LiveImageFile> | Iterable<LiveImageFile>, dir: string, failed: () => FerryError | undefined): Promise<void> {
  const buffer = Buffer.allocUnsafe(SPILL_READ_BYTES);
  for await (const file of live) {
    const target = resolveImagePath(dir, file.path);
    const fh = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600).catch((err: Error) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `cannot write live image file ${file.path}: ${err.message}`, { cause: err });
    });
    try {
      for (let offset = 0; ; ) {
        const stop = failed();
        if (stop !== undefined) throw stop;
        // A blocking pipe read, on libuv's pool: it returns as soon as CRIU wrote something.
        const { bytesRead } = await readFd(file.fd, buffer, 0, buffer.byteLength, null);
        if (bytesRead === 0) break;
        await writeFully(fh, buffer.subarray(0, bytesRead), offset);
        offset += bytesRead;
      }
      await fh.chmod(file.mode & 0o777);
    } finally {
      await fh.close();
    }
    file.onDone?.();
  }
}
