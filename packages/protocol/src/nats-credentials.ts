/**
 * The credentials file every ferry process (agent, coordinator, CLI) may be given to connect to
 * NATS (`FERRY_NATS_CREDENTIALS=/path/file.json`, read by each app's main.ts). JSON:
 *
 *   {"v": 1, "user": "agent-h1", "password": "...",
 *    "inboxPrefix": "_INBOX_h1",               optional: reply subjects for this principal
 *    "tls": {"caFile": "/path/ca.pem"}}         optional: require TLS, trusting this CA
 *
 * `inboxPrefix` exists because the server's subject permissions decide who may subscribe to
 * which replies: an agent whose replies arrive under `_INBOX_h1.>` needs no permission on
 * `_INBOX.>`, where the coordinator's replies (other agents' answers) go.
 * The file must not be readable by group or others (like ssh keys): it is refused otherwise.
 */
import { readFileSync, statSync } from 'node:fs';
import type { ConnectionOptions } from 'nats';
import { z } from 'zod';
import { ErrorCode, FerryError } from './errors';

/** Longest credentials file read; a few hundred bytes in practice. */
const MAX_CREDENTIALS_FILE_BYTES = 64 * 1024;
/** Permission bits that must be clear on a credentials file (group and others). */
const GROUP_OTHER_BITS = 0o077;

export const NatsCredentials = z.strictObject({
  v: z.literal(1),
  user: z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, 'user is 1-128 letters, digits, _ . -'),
  password: z.string().min(16).max(256),
  inboxPrefix: z
    .string()
    .regex(/^_INBOX[A-Za-z0-9_-]{0,64}$/, 'inboxPrefix is _INBOX followed by letters, digits, _ -')
    .optional(),
  tls: z.strictObject({ caFile: z.string().min(1).max(4096) }).optional(),
});
export type NatsCredentials = z.infer<typeof NatsCredentials>;

/**
 * Reads and checks a credentials file. FAILED_PRECONDITION if it is missing, unreadable, open to
 * group/others, or malformed (the message never contains the password).
 */
export function loadNatsCredentials(file: string): NatsCredentials {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if ((st.mode & GROUP_OTHER_BITS) !== 0) {
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `NATS credentials file ${file} has mode ${(st.mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600)`,
      );
    }
    if (st.size > MAX_CREDENTIALS_FILE_BYTES) throw new Error(`larger than ${MAX_CREDENTIALS_FILE_BYTES} bytes`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot read NATS credentials file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // The parser's message may quote the file's content, i.e. the password: not passed on.
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `NATS credentials file ${file} is not valid JSON`);
  }
  const parsed = NatsCredentials.safeParse(value);
  if (!parsed.success) {
    const fields = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`);
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `NATS credentials file ${file} is invalid: ${fields.join('; ')}`);
  }
  return parsed.data;
}

/** The nats.js connect options for a principal; none (anonymous, plain TCP) for null. */
export function natsAuthOptions(credentials: NatsCredentials | null): Partial<ConnectionOptions> {
  if (credentials === null) return {};
  return {
    user: credentials.user,
    pass: credentials.password,
    ...(credentials.inboxPrefix ? { inboxPrefix: credentials.inboxPrefix } : {}),
    ...(credentials.tls ? { tls: { caFile: credentials.tls.caFile } } : {}),
  };
}

/** Reads `file` (when set) and returns its connect options; `{}` for no file. */
export function natsAuthOptionsFromFile(file: string | null | undefined): Partial<ConnectionOptions> {
  return file ? natsAuthOptions(loadNatsCredentials(file)) : {};
}
