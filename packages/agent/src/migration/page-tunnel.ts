/**
 * ferry's page tunnel: the memory of a pre-copy migration, in CRIU's own page-server protocol,
 * from the source's `criu dump --page-server` to the target's `criu page-server`, carried by the
 * two agents over one TCP connection and sealed (AES-256-GCM) with keys derived from the
 * migration's image key.
 *
 *   criu dump ══socket pair══ agent ──sealed TCP── agent ══socket pair══ criu page-server
 *                  (--ps-socket)   native pumps         native pumps   (--ps-socket)
 *
 * Each CRIU talks to its own agent over a socket pair it was handed, so nothing listens on
 * loopback and CRIU's own (slow, GnuTLS) encryption stays out of the path. The bytes are moved by
 * @ferry/native's sealed pumps, one per direction, on threads of their own: no JavaScript per byte.
 * The pages flow while CRIU dumps, so the dump and the transfer overlap.
 *
 * The target listens on its registered address for one connection per migration; the source
 * proves it is this migration's by a one-time token both derive from the image key (it never
 * crosses the bus), and everything after it is authenticated by the keys, which only the two
 * agents (and the coordinator that made the image key) hold.
 */
import { hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { ErrorCode, FerryError, PAGE_TUNNEL_TOKEN_BYTES, toFerryError, type Logger, type PageTunnelEndpoint } from '@ferry/protocol';
import { SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET, socketFd, type LinuxSyscalls } from '@ferry/native';
import type { CriuDriver } from '../criu/criu-driver';
import { PageServer } from '../criu/criu-service';

export type TunnelSyscalls = Pick<LinuxSyscalls, 'socketpair' | 'close' | 'sealedPump' | 'setsockoptInt' | 'pageRelay'>;

/**
 * Socket buffers of the tunnel's sockets (both socket-pair ends and the TCP connection). The
 * defaults (~200 KiB) make CRIU, the pumps and the kernel hand over every few hundred KiB; a few
 * MiB lets each side move a whole frame or more per wake-up.
 */
export const PAGE_TUNNEL_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Grows a socket's buffers, beyond net.core.*mem_max where this process may (SO_*BUFFORCE needs
 * CAP_NET_ADMIN); where it may not, the plain options (capped by the sysctl) still help. A
 * refusal of both is no failure: the tunnel works with the defaults, only slower.
 */
export function growSocketBuffers(sys: Pick<LinuxSyscalls, 'setsockoptInt'>, fd: number, bytes = PAGE_TUNNEL_SOCKET_BUFFER_BYTES): void {
  for (const [force, plain] of [
    [SO_SNDBUFFORCE, SO_SNDBUF],
    [SO_RCVBUFFORCE, SO_RCVBUF],
  ]) {
    try {
      sys.setsockoptInt(fd, SOL_SOCKET, force, bytes);
    } catch {
      try {
        sys.setsockoptInt(fd, SOL_SOCKET, plain, bytes);
      } catch {
        // Defaults it is.
      }
    }
  }
}

/** Sealed frames of up to 1 MiB: large enough that the 20 bytes and the GCM set-up per frame cost nothing. */
export const PAGE_TUNNEL_FRAME_BYTES = 1024 * 1024;
/** How long the target waits for the source to connect and present its token, once asked to receive. */
export const PAGE_TUNNEL_ACCEPT_TIMEOUT_MS = 60_000;
/** How long a connection may take to present its token before it is dropped. */
const TOKEN_TIMEOUT_MS = 5_000;
/** Wrong tokens tolerated before the tunnel stops listening (someone is guessing). */
const MAX_BAD_CONNECTIONS = 8;
/** The one byte the target answers a good token with: after it, only sealed frames cross. */
const ACCEPTED = Buffer.from([0x01]);

/** The two directions' keys: never the image key itself, never one key for both directions. */
export function pageTunnelKeys(imageKey: Uint8Array): { toTarget: Buffer; toSource: Buffer } {
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), info, 32));
  return { toTarget: derive('ferry page tunnel v1: source to target'), toSource: derive('ferry page tunnel v1: target to source') };
}
/**
 * The one-time token a source opens the tunnel with, derived from the migration's image key on
 * both sides: it never crosses the bus (a token in the receive reply could be read there and the
 * tunnel's one connection taken first).
 */
export function pageTunnelToken(imageKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), 'ferry page tunnel v1: connect token', PAGE_TUNNEL_TOKEN_BYTES));
}

/** Nonce prefixes: the keys differ already; distinct prefixes make a key mix-up fail loudly. */
const TO_TARGET_PREFIX = Buffer.from([0x66, 0x74, 0x00, 0x01]);
const TO_SOURCE_PREFIX = Buffer.from([0x66, 0x74, 0x00, 0x02]);

/** Bytes through one tunnel end: sealed out (CRIU's side to the peer), opened in (the peer to CRIU). */
export interface PageTunnelCounts {
  sent: number;
  received: number;
  /** Sealed frames each way (end frames included): bytes per frame say how full the pumps ran. */
  framesSent: number;
  framesReceived: number;
}

/**
 * One end of a tunnel: the local CRIU's socket (the other end of its pair) joined to the TCP
 * connection by two pumps. Settles when both directions have ended with their authenticated end
 * frames; a failure of either stops the other.
 */
export class PageTunnelEnd {
  private readonly abort = new AbortController();
  private released = false;
  readonly done: Promise<PageTunnelCounts>;

  private constructor(
    private readonly sys: TunnelSyscalls,
    private readonly socket: Socket,
    private readonly localFd: number,
    sendKey: Buffer,
    sendPrefix: Buffer,
    receiveKey: Buffer,
    receivePrefix: Buffer,
  ) {
    // The pumps own the connection now and report its failures; Node's own view of it must not
    // throw an unhandled 'error' (an EPIPE once the peer is gone) and take the agent down.
    socket.on('error', () => undefined);
    let tcpFd: number;
    try {
      tcpFd = socketFd(socket);
    } catch (err) {
      // Node already read from it (it cannot be handed to a pump): neither end is kept.
      socket.destroy();
      sys.close(localFd);
      throw new FerryError(ErrorCode.INTERNAL, `page tunnel connection cannot be handed to the pumps: ${(err as Error).message}`, { cause: err });
    }
    growSocketBuffers(sys, tcpFd);
    growSocketBuffers(sys, localFd);
    const { signal } = this.abort;
    const stopOther = (err: unknown) => {
      this.abort.abort();
      throw err;
    };
    const out = sys.sealedPump(localFd, tcpFd, 'seal', sendKey, sendPrefix, PAGE_TUNNEL_FRAME_BYTES, { signal }).catch(stopOther);
    const back = sys.sealedPump(tcpFd, localFd, 'open', receiveKey, receivePrefix, PAGE_TUNNEL_FRAME_BYTES, { signal }).catch(stopOther);
    this.done = Promise.all([out, back]).then(
      ([o, b]) => ({ sent: o.bytesIn, received: b.bytesOut, framesSent: o.frames, framesReceived: b.frames }),
      (err: unknown) => {
        throw new FerryError(ErrorCode.TRANSFER_FAILED, `page tunnel failed: ${toFerryError(err).message}`, { cause: err });
      },
    );
    // Whatever happens, the fds go once both pumps have let go of them.
    void Promise.allSettled([out, back]).then(() => this.release());
    this.done.catch(() => undefined);
  }

  /** The source's end: `localFd` is its side of the pair whose other side `criu dump` got. */
  static source(sys: TunnelSyscalls, socket: Socket, localFd: number, imageKey: Uint8Array): PageTunnelEnd {
    const keys = pageTunnelKeys(imageKey);
    return new PageTunnelEnd(sys, socket, localFd, keys.toTarget, TO_TARGET_PREFIX, keys.toSource, TO_SOURCE_PREFIX);
  }

  /** The target's end: `localFd` is its side of the pair whose other side `criu page-server` got. */
  static target(sys: TunnelSyscalls, socket: Socket, localFd: number, imageKey: Uint8Array): PageTunnelEnd {
    const keys = pageTunnelKeys(imageKey);
    return new PageTunnelEnd(sys, socket, localFd, keys.toSource, TO_SOURCE_PREFIX, keys.toTarget, TO_TARGET_PREFIX);
  }

  /** Stops both directions now (a failed dump or a rollback): no end frame goes out, the peer sees a cut stream. */
  stop(): void {
    this.abort.abort();
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.socket.destroy();
    try {
      this.sys.close(this.localFd);
    } catch {
      // Already closed: nothing to release.
    }
  }
}

/** Reads exactly `n` bytes from a socket created paused, and nothing beyond them. */
function readExactly(socket: Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `no ${n}-byte greeting within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | null, data?: Buffer) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(data!);
    };
    // The peer sends exactly n bytes and then waits for an answer, so no byte after them can be in Node's buffer.
    const onReadable = () => {
      if (socket.readableLength > n) return finish(new FerryError(ErrorCode.INVALID_ARGUMENT, 'peer sent more than its greeting'));
      const data = socket.read(n) as Buffer | null;
      if (data) finish(null, data);
    };
    const onError = (err: Error) => finish(err);
    const onClose = () => finish(new FerryError(ErrorCode.UNAVAILABLE, 'connection closed during the greeting'));
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

function writeAll(socket: Socket, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
}

/**
 * The target's side: listens on `address` for the one connection of a migration. `accepted`
 * resolves with the connection once it presented the token; the caller then joins it to its
 * page server (PageTunnelEnd.target).
 */
export class PageTunnelListener {
  readonly accepted: Promise<Socket>;
  private server: Server | null;
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    server: Server,
    readonly address: string,
    readonly port: number,
    /** What the source must present: pageTunnelToken(image key) in a migration. */
    readonly token: Buffer,
    log: Logger,
  ) {
    this.server = server;
    let bad = 0;
    this.accepted = new Promise<Socket>((resolve, reject) => {
      this.timer = setTimeout(() => {
        this.close();
        reject(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `no page tunnel connection within ${PAGE_TUNNEL_ACCEPT_TIMEOUT_MS} ms`));
      }, PAGE_TUNNEL_ACCEPT_TIMEOUT_MS);
      server.on('connection', (socket: Socket) => {
        // Errors of a connection are handled where it is read or pumped; none may go unhandled.
        socket.on('error', () => undefined);
        socket.setNoDelay(true);
        void readExactly(socket, PAGE_TUNNEL_TOKEN_BYTES, TOKEN_TIMEOUT_MS)
          .then(async (presented) => {
            if (!timingSafeEqual(presented, this.token) || this.server === null) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'wrong page tunnel token');
            // One connection per migration: nobody else gets in once it is taken.
            this.close();
            resolve(socket);
          })
          .catch((err: unknown) => {
            socket.destroy();
            bad += 1;
            log.warn({ err: toFerryError(err).message, remote: socket.remoteAddress, bad }, 'page tunnel connection refused');
            if (bad >= MAX_BAD_CONNECTIONS) {
              this.close();
              reject(new FerryError(ErrorCode.TRANSFER_FAILED, `page tunnel closed after ${bad} bad connections`));
            }
          });
      });
    });
    this.accepted.catch(() => undefined);
  }

  static async listen(address: string, log: Logger, token: Buffer = randomBytes(PAGE_TUNNEL_TOKEN_BYTES)): Promise<PageTunnelListener> {
    // Paused from the start: Node must not read past the token (the pumps own every later byte).
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => resolve());
    });
    const { port } = server.address() as { port: number };
    return new PageTunnelListener(server, address, port, token, log);
  }

  /** What the receive reply says: where, never the token. */
  get endpoint(): PageTunnelEndpoint {
    return { address: this.address, port: this.port };
  }

  /** Tells the accepted source to go ahead; only then may its pumps start. */
  static async acknowledge(socket: Socket): Promise<void> {
    await writeAll(socket, ACCEPTED);
  }

  /** Stops listening (an accepted connection stays). */
  close(): void {
    clearTimeout(this.timer);
    this.server?.close();
    this.server = null;
  }
}

/**
 * The source's whole side, up to its CRIU: the tunnel joined (connected, token accepted) to one
 * end of a new socket pair, and the other end for the CRIU process to be handed (`criuFd`), which
 * the caller closes once CRIU holds its copy. Joined before CRIU freezes anything: a target that
 * cannot be reached fails the checkpoint with nothing frozen.
 */
export async function openSourceTunnel(sys: TunnelSyscalls, endpoint: PageTunnelEndpoint, imageKey: Uint8Array): Promise<{ end: PageTunnelEnd; criuFd: number }> {
  const socket = await connectPageTunnel(endpoint, pageTunnelToken(imageKey));
  let pair: [number, number];
  try {
    pair = sys.socketpair();
  } catch (err) {
    socket.destroy();
    throw err;
  }
  const [criuFd, localFd] = pair;
  growSocketBuffers(sys, criuFd);
  return { end: PageTunnelEnd.source(sys, socket, localFd, imageKey), criuFd };
}

/** The source's side: connects, presents the token, waits for the go-ahead. */
export async function connectPageTunnel(endpoint: PageTunnelEndpoint, token: Uint8Array, timeoutMs = TOKEN_TIMEOUT_MS): Promise<Socket> {
  const socket = connect({ host: endpoint.address, port: endpoint.port });
  socket.on('error', () => undefined);
  socket.pause();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new FerryError(ErrorCode.UNAVAILABLE, `page tunnel ${endpoint.address}:${endpoint.port} did not answer within ${timeoutMs} ms`)), timeoutMs);
      socket.once('connect', () => (clearTimeout(timer), resolve()));
      socket.once('error', (err) => (clearTimeout(timer), reject(new FerryError(ErrorCode.UNAVAILABLE, `cannot reach page tunnel ${endpoint.address}:${endpoint.port}: ${err.message}`, { cause: err }))));
    });
    socket.setNoDelay(true);
    await writeAll(socket, Buffer.from(token));
    const answer = await readExactly(socket, ACCEPTED.length, timeoutMs);
    if (!answer.equals(ACCEPTED)) throw new FerryError(ErrorCode.TRANSFER_FAILED, 'page tunnel refused the connection');
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/**
 * The target's whole side of a tunnel: the listener whose connection is joined to one end of a
 * socket pair, and the CRIU on the other end: `criu page-server` writing the pages into the
 * migration's images dir (pre-copy, started at once), or, for post-copy, the pull's relay asking the
 * source's lazy dump for them for the restore's `criu lazy-pages` daemon (post-copy/lazy-memory-feed.ts).
 */
export class PageTunnelReceiver {
  private end: PageTunnelEnd | undefined;
  private readonly joined: Promise<PageTunnelEnd>;
  private localClosed = false;

  private constructor(
    private readonly sys: TunnelSyscalls,
    private readonly listener: PageTunnelListener,
    private readonly localFd: number,
    /** CRIU's end of the pair, ours until a CRIU process holds it. */
    private criuFd: number | null,
    imageKey: Uint8Array,
    /** Pre-copy: the page server on CRIU's end. */
    readonly pageServer?: PageServer,
  ) {
    this.joined = listener.accepted.then(async (socket) => {
      this.end = PageTunnelEnd.target(sys, socket, localFd, imageKey);
      // Only now, with Node no longer reading the socket, may the source's frames come.
      await PageTunnelListener.acknowledge(socket);
      return this.end;
    });
    this.joined.catch(() => undefined);
  }

  /** Pre-copy: `criu page-server` on the pair, writing the pages into `imagesDir`. */
  static async forPageServer(sys: TunnelSyscalls, criu: CriuDriver, imagesDir: string, address: string, imageKey: Uint8Array, log: Logger): Promise<PageTunnelReceiver> {
    return PageTunnelReceiver.open(sys, address, imageKey, log, async (criuFd) => PageServer.startOnSocket(criu, imagesDir, criuFd, log));
  }

  /** Post-copy: the pair's other end waits for the pull's relay (takeLazyPagesEnd). */
  static async forLazyPages(sys: TunnelSyscalls, address: string, imageKey: Uint8Array, log: Logger): Promise<PageTunnelReceiver> {
    return PageTunnelReceiver.open(sys, address, imageKey, log, async () => undefined);
  }

  private static async open(
    sys: TunnelSyscalls,
    address: string,
    imageKey: Uint8Array,
    log: Logger,
    startCriu: (criuFd: number) => Promise<PageServer | undefined>,
  ): Promise<PageTunnelReceiver> {
    const [criuFd, localFd] = sys.socketpair();
    growSocketBuffers(sys, criuFd);
    let pageServer: PageServer | undefined;
    try {
      pageServer = await startCriu(criuFd);
      const listener = await PageTunnelListener.listen(address, log, pageTunnelToken(imageKey));
      // A CRIU holds its own copy now; ours would keep its end of the pair open after it exits.
      if (pageServer) sys.close(criuFd);
      return new PageTunnelReceiver(sys, listener, localFd, pageServer ? null : criuFd, imageKey, pageServer);
    } catch (err) {
      pageServer?.stop();
      sys.close(localFd);
      sys.close(criuFd);
      throw err;
    }
  }

  get endpoint(): PageTunnelEndpoint {
    return this.listener.endpoint;
  }

  /**
   * Post-copy: hands out this end of the pair (the tunnel's far end is the source's lazy dump) to
   * whoever asks the source for pages now (post-copy/lazy-memory-feed.ts), who closes it when done.
   */
  takeLazyPagesEnd(): number {
    const criuFd = this.criuFd;
    if (criuFd === null) throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'this page tunnel has no CRIU end left to hand out');
    this.criuFd = null;
    return criuFd;
  }

  /** Everything came: the tunnel ended with its end frames, and (pre-copy) the page server exited 0. */
  async done(): Promise<PageTunnelCounts> {
    const end = await this.joined.catch((err: unknown) => {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `the source never joined the page tunnel: ${toFerryError(err).message}`, { cause: err });
    });
    const counts = await end.done;
    await this.pageServer?.done;
    return counts;
  }

  /** A rollback: the listener, the tunnel and the page server go. */
  stop(): void {
    this.listener.close();
    this.pageServer?.stop();
    if (this.criuFd !== null) {
      this.sys.close(this.criuFd);
      this.criuFd = null;
    }
    if (this.end) this.end.stop();
    else if (!this.localClosed) {
      this.localClosed = true;
      this.sys.close(this.localFd);
    }
  }
}
