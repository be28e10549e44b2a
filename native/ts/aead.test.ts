import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

import { aeadInPlace, SyscallArgumentError } from './index';

const KEY = randomBytes(32);
const NONCE = randomBytes(12);
const AAD = Buffer.from('ferry-image-v1 xfer-1');

describe('aeadInPlace', () => {
  it('seals in place exactly as node:crypto does, and opens what node:crypto sealed', () => {
    const plain = randomBytes(3 * 1024 * 1024 + 7);
    const data = Buffer.from(plain);
    const tag = Buffer.alloc(16);
    expect(aeadInPlace('seal', KEY, NONCE, AAD, data, tag)).toBe(true);
    const cipher = createCipheriv('aes-256-gcm', KEY, NONCE).setAAD(AAD);
    expect(data.equals(Buffer.concat([cipher.update(plain), cipher.final()]))).toBe(true);
    expect(tag.equals(cipher.getAuthTag())).toBe(true);

    const decipher = createDecipheriv('aes-256-gcm', KEY, NONCE).setAAD(AAD).setAuthTag(tag);
    expect(Buffer.concat([decipher.update(data), decipher.final()]).equals(plain)).toBe(true);
    expect(aeadInPlace('open', KEY, NONCE, AAD, data, tag)).toBe(true);
    expect(data.equals(plain)).toBe(true);
  });

  it('works on a view into a larger buffer without touching the bytes around it', () => {
    const whole = randomBytes(1000);
    const before = Buffer.from(whole);
    const view = whole.subarray(100, 900);
    const tag = Buffer.alloc(16);
    aeadInPlace('seal', KEY, NONCE, AAD, view, tag);
    expect(whole.subarray(0, 100).equals(before.subarray(0, 100))).toBe(true);
    expect(whole.subarray(900).equals(before.subarray(900))).toBe(true);
    expect(aeadInPlace('open', KEY, NONCE, AAD, view, tag)).toBe(true);
    expect(whole.equals(before)).toBe(true);
  });

  it('refuses a flipped byte, another aad, another nonce or another key: false, never a throw', () => {
    const plain = randomBytes(4096);
    const tag = Buffer.alloc(16);
    const sealed = Buffer.from(plain);
    aeadInPlace('seal', KEY, NONCE, AAD, sealed, tag);
    const attempt = (mutate: (d: Buffer) => void, key = KEY, nonce = NONCE, aad = AAD) => {
      const d = Buffer.from(sealed);
      mutate(d);
      return aeadInPlace('open', key, nonce, aad, d, tag);
    };
    expect(attempt((d) => (d[17] ^= 1))).toBe(false);
    expect(attempt(() => undefined, KEY, NONCE, Buffer.from('other'))).toBe(false);
    expect(attempt(() => undefined, KEY, randomBytes(12))).toBe(false);
    expect(attempt(() => undefined, randomBytes(32))).toBe(false);
    expect(attempt(() => undefined)).toBe(true);
  });

  it('seals an empty message (a tag alone) and checks its arguments', () => {
    const tag = Buffer.alloc(16);
    expect(aeadInPlace('seal', KEY, NONCE, Buffer.alloc(0), Buffer.alloc(0), tag)).toBe(true);
    expect(aeadInPlace('open', KEY, NONCE, Buffer.alloc(0), Buffer.alloc(0), tag)).toBe(true);
    expect(() => aeadInPlace('seal', KEY.subarray(1), NONCE, AAD, Buffer.alloc(1), tag)).toThrow(SyscallArgumentError);
    expect(() => aeadInPlace('seal', KEY, NONCE, AAD, Buffer.alloc(1), Buffer.alloc(15))).toThrow(SyscallArgumentError);
    expect(() => aeadInPlace('oops' as 'seal', KEY, NONCE, AAD, Buffer.alloc(1), tag)).toThrow(SyscallArgumentError);
    expect(() => aeadInPlace('seal', KEY, NONCE, 'aad' as unknown as Uint8Array, Buffer.alloc(1), tag)).toThrow(SyscallArgumentError);
  });
});
