import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { ProcessIdentity, identifyProcess } from './process-identity';

/** A process started in the background, its output going to a log file. */
export interface SpawnedProcess extends ProcessIdentity {
  /** The Node handle (unref'd); only meaningful in the process that started it. */
  child: ChildProcess;
  logPath: string;
}

export interface SpawnLoggedOptions {
  /** Merged over this process's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** stdout and stderr are appended here. */
  logPath: string;
}

/** Lines of a log file's end to put into an error message. */
const LOG_TAIL_LINES = 15;

/** The last lines of a log file, for error messages ('' if unreadable). */
export function readLogTail(logPath: string, lines = LOG_TAIL_LINES): string {
  try {
    return fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Starts a detached process (own session: a Ctrl-C to `ferry dev up` does not reach it) that
 * outlives the caller, with stdin from /dev/null and stdout+stderr appended to `logPath`.
 * Resolves once the process exists, with its pid and start time.
 */
export async function spawnLogged(argv: string[], options: SpawnLoggedOptions): Promise<SpawnedProcess> {
  if (argv.length === 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'empty command');
  const logFd = fs.openSync(options.logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(argv[0], argv.slice(1), {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (err) {
    throw new FerryError(ErrorCode.UNAVAILABLE, `cannot start \`${argv.join(' ')}\`: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    fs.closeSync(logFd);
  }
  // Without this the caller (the CLI) could not exit while the cluster runs.
  child.unref();
  const identity = child.pid === undefined ? null : identifyProcess(child.pid);
  if (identity === null) {
    throw new FerryError(ErrorCode.UNAVAILABLE, `\`${argv.join(' ')}\` exited at once; see ${options.logPath}`, {
      details: [readLogTail(options.logPath)],
    });
  }
  return { ...identity, child, logPath: options.logPath };
}
