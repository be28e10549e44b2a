/**
 * One SSH connection (ssh2) to a host being bootstrapped: runs commands and copies files over SFTP.
 * The host key is checked during the handshake by `verifyHostKey`; a refused key ends the
 * connection before any credentials are sent and surfaces as FAILED_PRECONDITION with the reason.
 */
import { readFileSync } from 'node:fs';
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { verifyHostKey, type HostKeyPolicy } from './host-key';

/** Where and as whom to connect. */
export interface SshTarget {
  user: string;
  host: string;
  port: number;
}

export interface SshSessionOptions extends SshTarget {
  /** Private key file (OpenSSH format). */
  privateKeyFile: string;
  hostKey: HostKeyPolicy;
  /** Limit for TCP connect + handshake + authentication. */
  connectTimeoutMs: number;
}

/** What a remote command produced. */
export interface RemoteResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Default limit for connecting and authenticating. */
export const DEFAULT_SSH_CONNECT_TIMEOUT_MS = 15_000;
/** Default limit for one remote command. */
export const DEFAULT_REMOTE_COMMAND_TIMEOUT_MS = 60_000;

/** Parses `USER@ADDR[:PORT]` (INVALID_ARGUMENT otherwise). IPv6 addresses go in brackets: `root@[::1]:2222`. */
export function parseSshTarget(spec: string): SshTarget {
  const m = /^([A-Za-z_][A-Za-z0-9_.-]{0,31})@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(spec);
  const port = m?.[3] === undefined ? 22 : Number(m[3]);
  if (m === null || port < 1 || port > 65535) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--ssh must be USER@ADDR or USER@ADDR:PORT, got '${spec}'`);
  }
  return { user: m[1], host: m[2].replace(/^\[|\]$/g, ''), port };
}

/** Quotes a string for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** An open, authenticated SSH connection. */
export class SshSession {
  private sftpChannel: SFTPWrapper | null = null;

  private constructor(
    private readonly client: Client,
    readonly target: SshTarget,
  ) {}

  /** Connects, verifies the host key, authenticates with the key. */
  static async connect(options: SshSessionOptions): Promise<SshSession> {
    let privateKey: Buffer;
    try {
      privateKey = readFileSync(options.privateKeyFile);
    } catch (err) {
      throw new FerryError(ErrorCode.NOT_FOUND, `cannot read the SSH key ${options.privateKeyFile}`, { cause: err });
    }
    const client = new Client();
    const where = `${options.user}@${options.host}:${options.port}`;
    let refusal: string | null = null;
    let verifyError: unknown = null;
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', (err) => {
        if (verifyError !== null) reject(verifyError);
        else if (refusal !== null) reject(new FerryError(ErrorCode.FAILED_PRECONDITION, `refusing ${where}: ${refusal}`, { cause: err }));
        else {
          const level = (err as { level?: string }).level;
          const code = level === 'client-authentication' ? ErrorCode.FAILED_PRECONDITION : ErrorCode.UNAVAILABLE;
          reject(new FerryError(code, `ssh ${where}: ${err.message}`, { cause: err }));
        }
      });
      client.connect({
        host: options.host,
        port: options.port,
        username: options.user,
        privateKey,
        readyTimeout: options.connectTimeoutMs,
        // Only key authentication; never an agent or a password prompt behind the operator's back.
        tryKeyboard: false,
        hostVerifier: (key: Buffer): boolean => {
          try {
            const verdict = verifyHostKey(options.hostKey, options.host, options.port, key);
            if (!verdict.accepted) refusal = verdict.reason;
            return verdict.accepted;
          } catch (err) {
            verifyError = err;
            return false;
          }
        },
      });
    });
    return new SshSession(client, { user: options.user, host: options.host, port: options.port });
  }

  /** Runs a command through the remote user's shell; resolves with its exit code and output (never throws on non-zero). */
  exec(command: string, options: { stdin?: string; timeoutMs?: number } = {}): Promise<RemoteResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_REMOTE_COMMAND_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, channel: ClientChannel) => {
        if (err) {
          reject(new FerryError(ErrorCode.UNAVAILABLE, `ssh exec failed: ${err.message}`, { cause: err }));
          return;
        }
        const out: Buffer[] = [];
        const errOut: Buffer[] = [];
        const timer = setTimeout(() => {
          channel.close();
          reject(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `remote command did not finish within ${timeoutMs} ms: ${command.slice(0, 200)}`));
        }, timeoutMs);
        channel.on('data', (d: Buffer) => out.push(d));
        channel.stderr.on('data', (d: Buffer) => errOut.push(d));
        channel.on('close', (code: number | null, signal?: string) => {
          clearTimeout(timer);
          resolve({
            code: code ?? (signal ? 128 : -1),
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(errOut).toString('utf8'),
          });
        });
        channel.end(options.stdin ?? '');
      });
    });
  }

  /** Runs a command and throws (with its stderr) unless it exits 0. */
  async run(command: string, what: string, options: { stdin?: string; timeoutMs?: number } = {}): Promise<string> {
    const result = await this.exec(command, options);
    if (result.code !== 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${what} failed on ${this.target.host} (exit ${result.code})`, {
        details: result.stderr.trim().split('\n').slice(-10),
      });
    }
    return result.stdout;
  }

  /** Copies a local file to the remote over SFTP. */
  async putFile(localPath: string, remotePath: string, mode: number): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.fastPut(localPath, remotePath, { mode }, (err) =>
        err ? reject(new FerryError(ErrorCode.UNAVAILABLE, `sftp upload to ${remotePath} failed: ${err.message}`, { cause: err })) : resolve(),
      ),
    );
  }

  /** Writes content to a remote file over SFTP (created or truncated, with `mode`). */
  async writeFile(remotePath: string, content: string, mode: number): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.writeFile(remotePath, content, { mode }, (err) =>
        err ? reject(new FerryError(ErrorCode.UNAVAILABLE, `sftp write of ${remotePath} failed: ${err.message}`, { cause: err })) : resolve(),
      ),
    );
  }

  /** Closes the connection. */
  close(): void {
    this.sftpChannel?.end();
    this.client.end();
  }

  private async sftp(): Promise<SFTPWrapper> {
    if (this.sftpChannel !== null) return this.sftpChannel;
    this.sftpChannel = await new Promise<SFTPWrapper>((resolve, reject) =>
      this.client.sftp((err, sftp) =>
        err ? reject(new FerryError(ErrorCode.UNAVAILABLE, `the SFTP subsystem is not available: ${err.message}`, { cause: err })) : resolve(sftp),
      ),
    );
    return this.sftpChannel;
  }
}
