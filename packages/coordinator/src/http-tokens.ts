/**
 * The coordinator's HTTP tokens file (`FERRY_HTTP_TOKENS=/path/tokens.json`, read by main.ts):
 *
 *   {"v": 1, "tokens": [{"name": "alice", "role": "operator", "sha256": "<hex of SHA-256(token)>"}]}
 *
 * It holds only each bearer token's SHA-256, so reading the file (or a backup of it) gives no
 * token. A token is `ferry_` + 43 base64url characters (256 random bits): far beyond guessing,
 * which is why an unsalted hash is enough. Like the NATS credentials file, it is refused when
 * group or others may read it. Roles: `viewer` reads (GET API, dashboard data, event stream,
 * /metrics); `operator` also acts (migrate, cordon, uncordon, drain).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { ErrorCode, FerryError } from '@ferry/protocol';

/** Longest tokens file read: a few hundred tokens. */
const MAX_TOKENS_FILE_BYTES = 256 * 1024;
/** Permission bits that must be clear on a tokens file (group and others). */
const GROUP_OTHER_BITS = 0o077;
/** Random bytes in a generated token. */
const TOKEN_BYTES = 32;
/** Every generated token starts with this, so secret scanners and people recognise one. */
export const HTTP_TOKEN_PREFIX = 'ferry_';

export const HttpRole = z.enum(['viewer', 'operator']);
export type HttpRole = z.infer<typeof HttpRole>;

export const HttpTokenEntry = z.strictObject({
  /** Who holds it: shown in the coordinator's log and in 403 messages, never the token. */
  name: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, 'name is 1-64 letters, digits, _ . @ -'),
  role: HttpRole,
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'sha256 is 64 lowercase hex digits'),
});
export type HttpTokenEntry = z.infer<typeof HttpTokenEntry>;

export const HttpTokensFile = z.strictObject({ v: z.literal(1), tokens: z.array(HttpTokenEntry).max(1000) });
export type HttpTokensFile = z.infer<typeof HttpTokensFile>;

/** A fresh bearer token (give it to its holder once; store only its hash). */
export function newHttpToken(): string {
  return HTTP_TOKEN_PREFIX + randomBytes(TOKEN_BYTES).toString('base64url');
}

/** The hex SHA-256 of a token, as the tokens file stores it. */
export function hashHttpToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The file's text for these entries (write it 0600). */
export function httpTokensFileText(tokens: HttpTokenEntry[]): string {
  return JSON.stringify(HttpTokensFile.parse({ v: 1, tokens }), null, 2) + '\n';
}

/**
 * Reads and checks a tokens file. FAILED_PRECONDITION if it is missing, unreadable, open to
 * group/others, malformed, or names a holder or hash twice.
 */
export function loadHttpTokensFile(file: string): HttpTokensFile {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if ((st.mode & GROUP_OTHER_BITS) !== 0) {
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        `HTTP tokens file ${file} has mode ${(st.mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600)`,
      );
    }
    if (st.size > MAX_TOKENS_FILE_BYTES) throw new Error(`larger than ${MAX_TOKENS_FILE_BYTES} bytes`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot read HTTP tokens file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `HTTP tokens file ${file} is not valid JSON`);
  }
  const parsed = HttpTokensFile.safeParse(value);
  if (!parsed.success) {
    const fields = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`);
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `HTTP tokens file ${file} is invalid: ${fields.join('; ')}`);
  }
  const names = new Set<string>();
  const hashes = new Set<string>();
  for (const t of parsed.data.tokens) {
    if (names.has(t.name)) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `HTTP tokens file ${file} names ${t.name} twice`);
    // One token, two roles: which one applies would depend on the order.
    if (hashes.has(t.sha256)) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `HTTP tokens file ${file} lists the same token twice (${t.name})`);
    names.add(t.name);
    hashes.add(t.sha256);
  }
  return parsed.data;
}
