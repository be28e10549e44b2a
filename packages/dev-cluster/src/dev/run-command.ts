import { execFile } from 'node:child_process';
import { ErrorCode, FerryError } from '@ferry/protocol';

/** How long a plumbing command (`ip`, `mount`, `unshare`...) may take before we call it hung. */
export const COMMAND_TIMEOUT_MS = 15_000;

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunCommandOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Code of the FerryError raised when the command fails. */
  errorCode?: ErrorCode;
}

/**
 * Runs a command to completion (no shell). A non-zero exit becomes a FerryError whose message
 * carries the command line and its stderr, so an operator sees what `ip` or `mount` complained about.
 */
export function runCommand(file: string, args: string[], options: RunCommandOptions = {}): Promise<CommandResult> {
  const commandLine = [file, ...args].join(' ');
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { encoding: 'utf8', timeout: options.timeoutMs ?? COMMAND_TIMEOUT_MS, env: options.env, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const reason = stderr.trim() || err.message;
        reject(
          new FerryError(options.errorCode ?? ErrorCode.INTERNAL, `\`${commandLine}\` failed: ${reason}`, {
            cause: err,
            details: stdout.trim() === '' ? [] : [stdout.trim()],
          }),
        );
      },
    );
  });
}
