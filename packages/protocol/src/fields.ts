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
