import { promises as fs } from 'node:fs';

/** At most this many lines of a CRIU log travel in an error's `details`. */
export const MAX_CRIU_ERROR_LINES = 20;
/** Longer lines are cut: a path in a CRIU message can be long, a detail line should not be. */
export const MAX_CRIU_ERROR_LINE_CHARS = 500;
/** When a log holds no `Error (...)` line, this many of its last lines are given instead. */
export const CRIU_LOG_TAIL_LINES = 5;

/**
 * `Error (...)` lines CRIU prints on every run on some hosts that mean nothing: CRIU tries to raise
 * its own RLIMIT_NOFILE and carries on when it may not.
 */
export const HARMLESS_CRIU_ERRORS: readonly RegExp[] = [/Can't setup RLIMIT_NOFILE for self/];

/** CRIU writes `(00.012345) Error (criu/file.c:123): text`, or ` 1234: Error (...)` from a restoring child. */
const ERROR_LINE = /\bError \(/;

function cut(line: string): string {
  const trimmed = line.trim();
  return trimmed.length > MAX_CRIU_ERROR_LINE_CHARS ? `${trimmed.slice(0, MAX_CRIU_ERROR_LINE_CHARS)}...` : trimmed;
}

/** The meaningful `Error (...)` lines of a CRIU log, in order, without the known harmless ones. */
export function parseCriuErrorLines(logText: string, maxLines = MAX_CRIU_ERROR_LINES): string[] {
  return logText
    .split('\n')
    .filter((line) => ERROR_LINE.test(line) && !HARMLESS_CRIU_ERRORS.some((harmless) => harmless.test(line)))
    .slice(0, maxLines)
    .map(cut);
}

/** The last non-empty lines of a text. */
export function tailLines(text: string, count = CRIU_LOG_TAIL_LINES): string[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(-count)
    .map(cut);
}

/**
 * What an operator needs to see after a failed CRIU run: the log's error lines; failing those, what
 * CRIU printed on stderr (it writes there before the log file is open); failing that, the log's tail.
 */
export async function readCriuFailureDetails(logPath: string, stderr = ''): Promise<string[]> {
  let logText = '';
  try {
    logText = await fs.readFile(logPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const fromLog = parseCriuErrorLines(logText);
  if (fromLog.length > 0) return fromLog;
  const fromStderr = parseCriuErrorLines(stderr);
  if (fromStderr.length > 0) return fromStderr;
  const tail = tailLines(logText);
  return tail.length > 0 ? tail : tailLines(stderr);
}
