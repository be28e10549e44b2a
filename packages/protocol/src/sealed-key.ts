/**
 * Secrets sealed to one agent: the coordinator makes a migration's image key and must hand it to
 * the two agents over NATS, where whoever runs or sniffs the bus could read a plain field. Each
 * agent makes an X25519 key pair at start and registers its public key; the coordinator seals the
 * image key to each agent's key (ephemeral X25519, HKDF-SHA256, AES-256-GCM), so only that agent
 * can open it. The migration id is bound in as associated data: a sealed key replayed into another
 * migration does not open.
 */
import { createCipheriv, createDecipheriv, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { ErrorCode, FerryError } from './errors';
import { Bytes } from './fields';

/** A raw X25519 public key. */
export const SEAL_PUBLIC_KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const INFO = Buffer.from('ferry sealed key v1');

/** An agent's public key for sealed secrets, as it registers it. */
export const SealPublicKey = Bytes().refine((k) => k.byteLength === SEAL_PUBLIC_KEY_BYTES, `a seal public key is ${SEAL_PUBLIC_KEY_BYTES} bytes`);

/** A sealed secret of up to 64 bytes: ephemeral public key, nonce, ciphertext, tag. */
export const SealedSecret = Bytes().refine(
  (b) => b.byteLength > SEAL_PUBLIC_KEY_BYTES + NONCE_BYTES + TAG_BYTES && b.byteLength <= SEAL_PUBLIC_KEY_BYTES + NONCE_BYTES + TAG_BYTES + 64,
  'not a sealed secret',
);

/** DER prefix of an X25519 SubjectPublicKeyInfo; the raw key follows. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, Buffer.from(raw)]), format: 'der', type: 'spki' });
}

function rawOf(publicKey: KeyObject): Buffer {
  return (publicKey.export({ format: 'der', type: 'spki' }) as Buffer).subarray(X25519_SPKI_PREFIX.length);
}

function derive(shared: Buffer, ephemeral: Uint8Array, recipient: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([ephemeral, recipient]), INFO, 32));
}

/** An agent's key pair: the private half never leaves its process. */
export class SealKeyPair {
  private constructor(
    private readonly privateKey: KeyObject,
    /** What the agent registers. */
    readonly publicKey: Buffer,
  ) {}

  static generate(): SealKeyPair {
    const { privateKey, publicKey } = generateKeyPairSync('x25519');
    return new SealKeyPair(privateKey, rawOf(publicKey));
  }

  /** Opens a secret sealed to this key for `context` (the migration id); INVALID_ARGUMENT if it was not. */
  open(sealed: Uint8Array, context: string): Buffer {
    const buf = Buffer.from(sealed);
    const ephemeral = buf.subarray(0, SEAL_PUBLIC_KEY_BYTES);
    const nonce = buf.subarray(SEAL_PUBLIC_KEY_BYTES, SEAL_PUBLIC_KEY_BYTES + NONCE_BYTES);
    const tag = buf.subarray(buf.length - TAG_BYTES);
    const ciphertext = buf.subarray(SEAL_PUBLIC_KEY_BYTES + NONCE_BYTES, buf.length - TAG_BYTES);
    try {
      const shared = diffieHellman({ privateKey: this.privateKey, publicKey: publicKeyFromRaw(ephemeral) });
      const decipher = createDecipheriv('aes-256-gcm', derive(shared, ephemeral, this.publicKey), nonce);
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch (err) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'a sealed secret does not open with this agent\'s key (sealed to another, for another migration, or altered)', { cause: err });
    }
  }
}

/** Seals `secret` (at most 64 bytes) to the agent whose raw public key is `recipient`, for `context`. */
export function sealToAgent(secret: Uint8Array, recipient: Uint8Array, context: string): Buffer {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const ephemeral = rawOf(publicKey);
  const shared = diffieHellman({ privateKey, publicKey: publicKeyFromRaw(recipient) });
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', derive(shared, ephemeral, recipient), nonce);
  cipher.setAAD(Buffer.from(context));
  const ciphertext = Buffer.concat([cipher.update(secret), cipher.final()]);
  return Buffer.concat([ephemeral, nonce, ciphertext, cipher.getAuthTag()]);
}
