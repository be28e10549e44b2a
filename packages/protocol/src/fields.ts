/**
 * Field schemas the message files share. Internal to the package: index.ts exports the messages,
 * not these pieces.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './version';

/** Every request carries the protocol version it was written for (rpc.ts checks it first). */
export const Version = z.literal(PROTOCOL_VERSION);

export const AbsolutePath = z
  .string()
  .max(4096)
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..') && !p.includes('\0'), 'must be an absolute path without ..');

/**
 * The constructor `Bytes` checks against: Uint8Array itself, typed to make instances over any
 * buffer. TypeScript types `new Uint8Array()` as Uint8Array<ArrayBuffer>, which a Buffer (what
 * msgpack bin decodes to, and what randomBytes returns) is not, though `instanceof` accepts it.
 */
const AnyUint8Array: new (...args: never[]) => Uint8Array = Uint8Array;

/** A binary field: msgpack bin, a Buffer once decoded. */
export const Bytes = (): z.ZodCustom<Uint8Array, Uint8Array> => z.instanceof(AnyUint8Array);
