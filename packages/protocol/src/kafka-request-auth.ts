/**
 * Who sent a request on Kafka `ferry.requests`. A Kafka consumer never learns which principal
 * produced a message, so the broker's ACLs (only autoscalers may write the topic) are not enough
 * for the coordinator to know who asks: every request carries its requester's name and an
 * HMAC-SHA256 tag under a key that requester shares with the coordinator only:
 *
 *   {"requestId": "r1", "kind": "migrate", "workload": "w", "to": "h2",
 *    "auth": {"requester": "autoscaler", "issuedAt": 1764741600000, "mac": "<64 hex digits>"}}
 *
 * mac = HMAC-SHA256(key, input), input = these fields in this order, each as a 4-byte big-endian
 * byte length followed by its UTF-8 bytes (an absent field is the empty string):
 *   "ferry-kafka-request-v1", requester, issuedAt (decimal ms since the epoch), requestId, kind,
 *   workload, to, host.
 * `issuedAt` is signed, so an old request cannot be made fresh by re-producing it (Kafka's own
 * message time is the producer's to set); the coordinator also refuses a tag it has already seen.
 *
 * Keys are at least 32 random bytes, written base64 in the files: a requester's signing file
 * `{"v": 1, "requester": "autoscaler", "key": "<base64>"}` and the coordinator's
 * `{"v": 1, "requesters": {"autoscaler": ["<base64>", ...]}}` (several keys per requester while
 * one is being replaced). Both 0600.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode, FerryError } from './errors';
import { readPrivateJsonFile } from './private-file';
import { Id } from './schemas';

const CONTEXT = 'ferry-kafka-request-v1';
/** Shortest key accepted (bytes). */
export const MIN_REQUEST_KEY_BYTES = 32;
/** How far in the future `issuedAt` may lie (clocks of the autoscaler and the coordinator differ). */
export const MAX_REQUEST_CLOCK_SKEW_MS = 60_000;

/** The fields of a request the tag covers. */
export interface SignableKafkaRequest {
  requestId: string;
  kind: string;
  workload?: string;
  to?: string;
  host?: string;
}

export const KafkaRequestAuth = z.strictObject({
  requester: Id,
  issuedAt: z.number().int().positive(),
  mac: z.string().regex(/^[0-9a-f]{64}$/, 'mac is 64 lowercase hex digits'),
});
export type KafkaRequestAuth = z.infer<typeof KafkaRequestAuth>;

/** What signs: a requester's name and key. */
export interface KafkaRequestSigner {
  requester: string;
  key: Buffer;
}

/** The bytes the tag is computed over (documented above, for signers in other languages). */
export function kafkaRequestSigningInput(req: SignableKafkaRequest, requester: string, issuedAt: number): Buffer {
  const fields = [CONTEXT, requester, String(issuedAt), req.requestId, req.kind, req.workload ?? '', req.to ?? '', req.host ?? ''];
  const parts: Buffer[] = [];
  for (const f of fields) {
    const bytes = Buffer.from(f, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    parts.push(len, bytes);
  }
  return Buffer.concat(parts);
}

function mac(key: Buffer, req: SignableKafkaRequest, requester: string, issuedAt: number): Buffer {
  return createHmac('sha256', key).update(kafkaRequestSigningInput(req, requester, issuedAt)).digest();
}

/** `req` with its `auth` field: what an autoscaler produces to `ferry.requests`. */
export function signKafkaRequest<T extends SignableKafkaRequest>(req: T, signer: KafkaRequestSigner, nowMs: number = Date.now()): T & { auth: KafkaRequestAuth } {
  if (signer.key.length < MIN_REQUEST_KEY_BYTES) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `a request key has at least ${MIN_REQUEST_KEY_BYTES} bytes`);
  const issuedAt = Math.floor(nowMs);
  return { ...req, auth: { requester: signer.requester, issuedAt, mac: mac(signer.key, req, signer.requester, issuedAt).toString('hex') } };
}

/**
 * Why `auth` does not prove that a known requester sent `req` recently, or null when it does.
 * UNAUTHENTICATED-worthy problems only; never throws.
 */
export function kafkaRequestAuthProblem(
  req: SignableKafkaRequest,
  auth: unknown,
  keys: ReadonlyMap<string, readonly Buffer[]>,
  nowMs: number,
  maxAgeMs: number,
): string | null {
  if (auth === undefined) return 'the request is not signed (no auth field); requests must carry a requester and an HMAC tag';
  const parsed = KafkaRequestAuth.safeParse(auth);
  if (!parsed.success) return `malformed auth: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || 'auth'}: ${i.message}`).join('; ')}`;
  const a = parsed.data;
  const candidates = keys.get(a.requester);
  if (!candidates || candidates.length === 0) return `unknown requester ${JSON.stringify(a.requester)}`;
  const given = Buffer.from(a.mac, 'hex');
  // Every key is tried (no early exit), each compared in constant time.
  let ok = false;
  for (const key of candidates) if (timingSafeEqual(mac(key, req, a.requester, a.issuedAt), given)) ok = true;
  if (!ok) return `bad signature for requester ${JSON.stringify(a.requester)}`;
  const ageMs = nowMs - a.issuedAt;
  if (ageMs > maxAgeMs) return `the request was signed ${Math.round(ageMs / 1000)} s ago, longer than ${Math.round(maxAgeMs / 1000)} s: not replayed`;
  if (ageMs < -MAX_REQUEST_CLOCK_SKEW_MS) return `the request is signed ${Math.round(-ageMs / 1000)} s in the future (clock skew over ${MAX_REQUEST_CLOCK_SKEW_MS / 1000} s)`;
  return null;
}

const Base64Key = z
  .string()
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'a key is base64')
  .refine((s) => Buffer.from(s, 'base64').length >= MIN_REQUEST_KEY_BYTES, `a key has at least ${MIN_REQUEST_KEY_BYTES} bytes`);

const SignerFile = z.strictObject({ v: z.literal(1), requester: Id, key: Base64Key });
const KeysFile = z.strictObject({ v: z.literal(1), requesters: z.record(Id, z.array(Base64Key).min(1).max(8)) });

function invalid(file: string, what: string, issues: z.core.$ZodIssue[]): FerryError {
  const fields = issues.slice(0, 5).map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`);
  return new FerryError(ErrorCode.FAILED_PRECONDITION, `${what} ${file} is invalid: ${fields.join('; ')}`);
}

/** A requester's signing file (`{v, requester, key}`, 0600). */
export function loadKafkaRequestSigner(file: string): KafkaRequestSigner {
  const what = 'Kafka request key file';
  const parsed = SignerFile.safeParse(readPrivateJsonFile(file, what));
  if (!parsed.success) throw invalid(file, what, parsed.error.issues);
  return { requester: parsed.data.requester, key: Buffer.from(parsed.data.key, 'base64') };
}

/** The coordinator's file of every requester's keys (`{v, requesters: {name: [key, ...]}}`, 0600). */
export function loadKafkaRequestKeys(file: string): Map<string, Buffer[]> {
  const what = 'Kafka request keys file';
  const parsed = KeysFile.safeParse(readPrivateJsonFile(file, what));
  if (!parsed.success) throw invalid(file, what, parsed.error.issues);
  return new Map(Object.entries(parsed.data.requesters).map(([name, keys]) => [name, keys.map((k) => Buffer.from(k, 'base64'))]));
}
