import { Packr } from 'msgpackr';
import { ErrorCode, FerryError } from './errors';

/**
 * msgpack with plain maps and no record extension, so any msgpack implementation can read
 * ferry's messages. Binary payloads travel as msgpack bin and decode as Buffers without a copy
 * of the surrounding frame's bytes being made again.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, int64AsType: 'number' });

/** Largest message ferry accepts on any control subject; chunk frames are bounded separately. */
export const MAX_CONTROL_MESSAGE_BYTES = 1024 * 1024;

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes msgpack, turning any parser failure into INVALID_ARGUMENT (never a crash). */
export function decode(bytes: Uint8Array, maxBytes = MAX_CONTROL_MESSAGE_BYTES): unknown {
  if (bytes.byteLength > maxBytes) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `message of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`);
  }
  if (bytes.byteLength === 0) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'empty message');
  }
  try {
    return packr.unpack(bytes);
  } catch (err) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `malformed msgpack: ${(err as Error).message}`, { cause: err });
  }
}
