/**
 * Runs one of the host tools the agent drives (mount helpers, ip, arping, nft, openssl) and turns
 * its failure into a FerryError carrying the tool's own words (stderr), so each caller names only
 * what failed and which code it is.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '@ferry/protocol';

const execFileAsync = promisify(execFile);

export interface RunToolOptions {
  timeoutMs: number;
  /** The error's code when the tool fails. */
  code: ErrorCode;
  /** What failed, for the message: "<failure>: <the tool's stderr>". */
  failure: string;
  /** Keep only the last this many characters of the tool's words (openssl is verbose). */
  tailChars?: number;
}

/** The tool's stdout; on failure a FerryError whose `details` hold its stderr lines. */
export async function runTool(file: string, args: string[], opts: RunToolOptions): Promise<string> {
  try {
    const { stdout } = await execFileAsync(file, args, { timeout: opts.timeoutMs });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const words = (e.stderr || e.message).trim();
    const detail = opts.tailChars === undefined ? words : words.slice(-opts.tailChars);
    throw new FerryError(opts.code, `${opts.failure}: ${detail}`, { cause: err, details: (e.stderr ?? '').split('\n').filter(Boolean) });
  }
}
