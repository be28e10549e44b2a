/**
 * Reading a file that holds a secret (a password, a signing key): like an ssh key, it is refused
 * when group or others may read it, and its content never appears in an error.
 */
import { readFileSync, statSync } from 'node:fs';
import { ErrorCode, FerryError } from './errors';

/** Permission bits that must be clear on a secret file (group and others). */
const GROUP_OTHER_BITS = 0o077;
/** Longest secret file read; a few hundred bytes in practice. */
const MAX_SECRET_FILE_BYTES = 64 * 1024;

/**
 * The JSON value in `file`, which must be a regular file of mode 0600 or stricter. `what` names
 * the file in errors ("Kafka credentials file"). FAILED_PRECONDITION for a missing, open,
 * oversized or non-JSON file (the parser's message is not passed on: it may quote the secret).
 */
export function readPrivateJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if ((st.mode & GROUP_OTHER_BITS) !== 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${what} ${file} has mode ${(st.mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600)`);
    }
    if (st.size > MAX_SECRET_FILE_BYTES) throw new Error(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot read ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${what} ${file} is not valid JSON`);
  }
}
