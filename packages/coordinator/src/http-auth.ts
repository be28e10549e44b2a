/**
 * Who may use the coordinator's HTTP API: bearer tokens from the tokens file (http-tokens.ts),
 * each with a role. The file is read again whenever it changes (polled: that also sees a
 * Kubernetes Secret's symlink swap and an editor's rename) and on `reload()` (SIGHUP in main.ts),
 * so adding, rotating or revoking a token needs no restart. A file that cannot be read or is
 * invalid leaves no token valid until it is fixed: failing open would let a revoked token back in.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { ErrorCode, FerryError, silentLogger, type Logger } from '@ferry/protocol';
import { loadHttpTokensFile, type HttpRole } from './http-tokens';

/** How often the tokens file's status is polled for changes. */
export const TOKENS_FILE_POLL_INTERVAL_MS = 1_000;
/** Longest Authorization header value looked at (a token is 49 characters). */
const MAX_TOKEN_CHARS = 512;

/** Who made a request. */
export interface HttpPrincipal {
  /** The token's holder, from the tokens file. */
  name: string;
  role: HttpRole;
}

/** Roles ordered by what they may do: each may do all that the ones before it may. */
const ROLE_RANK: Record<HttpRole, number> = { viewer: 0, operator: 1 };

type TokenSet = { ok: true; tokens: Array<{ principal: HttpPrincipal; hash: Buffer }> } | { ok: false; problem: string };

/** Checks bearer tokens against the tokens file; `null` file: no token is valid (nothing configured). */
export class HttpAuthenticator {
  private current: TokenSet;
  private poller: NodeJS.Timeout | undefined;
  /** The file's identity (inode, size, mtime, mode) when it was last read: a poll that sees another reads it again. */
  private readSignature: string | null = null;
  private readonly reloadListeners: Array<() => void> = [];

  constructor(
    /** The tokens file; null when none is configured. */
    readonly file: string | null,
    private readonly log: Logger = silentLogger,
  ) {
    this.current = { ok: false, problem: 'not read yet' };
    this.reload();
  }

  /** Whether a tokens file is configured (whatever its state). */
  get configured(): boolean {
    return this.file !== null;
  }

  /** Reads the tokens file again; on failure, no token is valid until a later read succeeds. */
  reload(): void {
    if (this.file === null) return;
    // Taken before the read: a change made while reading is seen by the next poll.
    this.readSignature = this.signature();
    try {
      const data = loadHttpTokensFile(this.file);
      this.current = {
        ok: true,
        tokens: data.tokens.map((t) => ({ principal: { name: t.name, role: t.role }, hash: Buffer.from(t.sha256, 'hex') })),
      };
      const roles = { viewer: 0, operator: 0 };
      for (const t of data.tokens) roles[t.role]++;
      this.log.info({ file: this.file, ...roles }, 'HTTP tokens loaded');
    } catch (err) {
      this.current = { ok: false, problem: (err as Error).message };
      this.log.error({ err: (err as Error).message, file: this.file }, 'HTTP tokens file unusable; every authenticated HTTP request is refused until it is fixed');
    }
    for (const fn of this.reloadListeners) fn();
  }

  /**
   * Calls `fn` after every read of the file (whatever it found): holders of long-lived connections
   * authenticated earlier (event streams) end them, so a revoked token stops receiving at once.
   */
  onReload(fn: () => void): void {
    this.reloadListeners.push(fn);
  }

  /**
   * Re-reads the file whenever its inode, size, mtime or mode differ from when it was last read.
   * Compared with the last read, not with the previous poll (as fs.watchFile does): a change made
   * between a read and the first poll is not missed.
   */
  watch(intervalMs = TOKENS_FILE_POLL_INTERVAL_MS): void {
    if (this.file === null || this.poller !== undefined) return;
    this.poller = setInterval(() => {
      if (this.signature() !== this.readSignature) this.reload();
    }, intervalMs);
    this.poller.unref();
  }

  close(): void {
    if (this.poller !== undefined) clearInterval(this.poller);
    this.poller = undefined;
  }

  private signature(): string {
    try {
      const st = statSync(this.file!);
      return `${st.ino}:${st.size}:${st.mtimeMs}:${st.mode}`;
    } catch (err) {
      return `unreadable:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
    }
  }

  /**
   * The principal of an `Authorization` header value. UNAUTHENTICATED (401) without a header, with
   * one that is not `Bearer <token>`, or with a token the file does not list; UNAVAILABLE (503)
   * when the file cannot be used.
   */
  authenticate(authorization: string | undefined): HttpPrincipal {
    if (this.file === null) {
      throw new FerryError(
        ErrorCode.UNAUTHENTICATED,
        'this coordinator has no HTTP tokens configured, so its API and dashboard are closed: set FERRY_HTTP_TOKENS to a tokens file (see docs/security.md, "The HTTP API")',
      );
    }
    if (authorization === undefined || authorization === '') {
      throw new FerryError(ErrorCode.UNAUTHENTICATED, 'a bearer token is required: send Authorization: Bearer <token> (the dashboard asks for it)');
    }
    const m = /^Bearer +([\x21-\x7e]+) *$/i.exec(authorization.slice(0, MAX_TOKEN_CHARS + 16));
    if (!m || m[1].length > MAX_TOKEN_CHARS) throw new FerryError(ErrorCode.UNAUTHENTICATED, 'the Authorization header must be Bearer <token>');
    const set = this.current;
    if (!set.ok) {
      // The reason (a path, a mode) is in the coordinator's log; a caller without a valid token gets no more.
      throw new FerryError(ErrorCode.UNAVAILABLE, "the coordinator cannot check tokens: its HTTP tokens file is unusable (see the coordinator's log)");
    }
    const presented = createHash('sha256').update(m[1], 'utf8').digest();
    // Every entry is compared, in constant time each, so the time taken says nothing about which matched.
    let found: HttpPrincipal | null = null;
    for (const t of set.tokens) {
      if (timingSafeEqual(presented, t.hash) && found === null) found = t.principal;
    }
    if (found === null) throw new FerryError(ErrorCode.UNAUTHENTICATED, 'unknown or revoked token');
    return found;
  }

  /** PERMISSION_DENIED (403) unless `principal`'s role includes `needed`; `what` names the action. */
  authorize(principal: HttpPrincipal, needed: HttpRole, what: string): void {
    if (ROLE_RANK[principal.role] >= ROLE_RANK[needed]) return;
    throw new FerryError(ErrorCode.PERMISSION_DENIED, `refused: token ${principal.name} has role ${principal.role}; ${what} needs the ${needed} role`);
  }
}
