/**
 * A page server's client credentials on the bus. The per-migration CA's certificate and the
 * client certificate are public; the client's private key is not: whoever holds it (and the
 * connection's one chance) could take the page server's connection in the source's place. It
 * crosses hosts (target -> coordinator -> source for a dump to the target's page server; source ->
 * coordinator -> target for post-copy from the source's lazy dump) only sealed with a key both
 * agents derive from the migration's image key, which reached each of them sealed to its own
 * X25519 key (sealed-key.ts). So neither the coordinator nor anyone reading NATS can use it.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode, FerryError } from './errors';
import { Bytes } from './fields';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const INFO = Buffer.from('ferry page-server tls key v1');
/** Largest PEM document accepted (an EC or RSA key or a certificate is far smaller). */
const MAX_PEM_CHARS = 8192;

/** One PEM document (a certificate or a key), bounded. */
export const Pem = z.string().min(1).max(MAX_PEM_CHARS).refine((t) => t.startsWith('-----BEGIN '), 'not PEM');

/** The client's private key, sealed: nonce, ciphertext, tag. */
const SealedPem = Bytes().refine((b) => b.byteLength > NONCE_BYTES + TAG_BYTES && b.byteLength <= NONCE_BYTES + TAG_BYTES + MAX_PEM_CHARS, 'not a sealed key');

/**
 * The client side of a page server's mutual TLS as it travels: the CA's certificate and the
 * certificate the source's `criu dump` (or the target's `criu lazy-pages`) presents, in clear, and
 * its key sealed (`sealPageServerTls`).
 */
export const PageServerTls = z.object({ caCert: Pem, cert: Pem, sealedKey: SealedPem });
export type PageServerTls = z.infer<typeof PageServerTls>;

/** The same credentials opened, as the agent that made or received them writes them for CRIU. */
export interface PageServerClientTls {
  caCert: string;
  cert: string;
  key: string;
}

/** The key that seals page-server client keys of the migration whose image key is `imageKey` (never the image key itself). */
export function pageServerTlsKey(imageKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), INFO, 32));
}

/** Seals `client`'s key under `boxKey` (pageServerTlsKey) for migration `migrationId`. */
export function sealPageServerTls(client: PageServerClientTls, boxKey: Uint8Array, migrationId: string): PageServerTls {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', boxKey, nonce);
  cipher.setAAD(Buffer.from(migrationId));
  const sealed = Buffer.concat([nonce, cipher.update(client.key, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return { caCert: client.caCert, cert: client.cert, sealedKey: sealed };
}

/** Opens what `sealPageServerTls` made; INVALID_ARGUMENT if it was sealed under another key, for another migration, or altered. */
export function openPageServerTls(tls: PageServerTls, boxKey: Uint8Array, migrationId: string): PageServerClientTls {
  const buf = Buffer.from(tls.sealedKey);
  try {
    const decipher = createDecipheriv('aes-256-gcm', boxKey, buf.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.from(migrationId));
    decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES));
    const key = Buffer.concat([decipher.update(buf.subarray(NONCE_BYTES, buf.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    if (!Pem.safeParse(key).success) throw new Error('not PEM');
    return { caCert: tls.caCert, cert: tls.cert, key };
  } catch (err) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, "the page server's client key does not open with this migration's key (sealed for another migration, or altered)", { cause: err });
  }
}
