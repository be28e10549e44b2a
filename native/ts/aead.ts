import { types } from 'node:util';

import { SyscallArgumentError } from './errors';
import { loadNativeBinding } from './native-binding';
import { checkFixedBytes } from './validate';

const NAME = 'aeadInPlace';
export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;

function bytes(name: string, value: unknown): Uint8Array {
  if (!types.isUint8Array(value)) throw new SyscallArgumentError(NAME, name, 'must be a Uint8Array or Buffer');
  return value;
}

/**
 * AES-256-GCM on `data` in place, synchronously (a few MiB take a millisecond or two): for frames
 * JavaScript handles anyway, without node:crypto's fresh output buffer per call.
 * `seal`: encrypts `data` and writes its tag into `tag` (16 bytes); returns true.
 * open: decrypts `data` if `tag` authenticates it with `aad` and returns true; false for a bad tag,
 * and `data` then holds garbage that must not be used. A nonce must never repeat under one key.
 */
export function aeadInPlace(
  mode: 'seal' | 'open',
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  data: Uint8Array,
  tag: Uint8Array,
): boolean {
  if (mode !== 'seal' && mode !== 'open') throw new SyscallArgumentError(NAME, 'mode', "must be 'seal' or 'open'");
  return loadNativeBinding().aeadInPlace(
    mode === 'seal',
    checkFixedBytes(NAME, 'key', key, AEAD_KEY_BYTES),
    checkFixedBytes(NAME, 'nonce', nonce, AEAD_NONCE_BYTES),
    bytes('aad', aad),
    bytes('data', data),
    checkFixedBytes(NAME, 'tag', tag, AEAD_TAG_BYTES),
  );
}
