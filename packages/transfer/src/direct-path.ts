/**
 * The direct data path: image frames over one TCP connection from the sender to the receiver,
 * negotiated over NATS. On a 2-core machine a bare NATS stream tops out at a fraction of one TCP
 * stream (nats-server and both clients parse every byte); the direct path skips the server and
 * the client's message parser. The receiver offers an endpoint on the transfer's direct subject;
 * the sender connects, presents a one-time token, and sends the same frames. With the migration's
 * key the token is derived from it on both ends and the offer is tagged (control-frame-auth.ts):
 * nothing on the bus lets another principal take the connection or steer the sender elsewhere.
 * Without a key (anonymous dev NATS) the offer carries a random token.
 * When the receiver declines, does not answer, or cannot be reached, the sender falls back to NATS.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { connect as tcpConnect, createServer, type Server, type Socket } from 'node:net';
import type { NatsConnection } from 'nats';
import { decode, encode, ErrorCode, FerryError, parseMessage, PROTOCOL_VERSION, subjects, toFerryError } from '@ferry/protocol';
import { FrameSocket } from './frame-socket';
import { directToken, type ControlFrameAuthenticator } from './control-frame-auth';
import { DirectReplyFrame, HelloFrame } from './frames';

/** How long the sender waits for the receiver's offer before using NATS. */
export const DIRECT_OFFER_TIMEOUT_MS = 2_000;
/** How long the sender tries to connect to an offered endpoint before using NATS. */
export const DIRECT_CONNECT_TIMEOUT_MS = 2_000;
/** A connection that has not presented the token within this long is dropped. */
export const DIRECT_HELLO_TIMEOUT_MS = 5_000;
/** Largest frame accepted before the token is checked: a hello is tiny. */
const HELLO_MAX_BYTES = 256;
const TOKEN_BYTES = 16;

/** Receiver side: a listening socket that accepts exactly one connection presenting the token. */
export class DirectEndpoint {
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    readonly token: string,
    /** Whether the offer includes the pumped path. */
    readonly pump: boolean,
    private readonly keyed: boolean,
  ) {}

  /**
   * Listens on `host`, port chosen by the kernel. `onLink` gets the authenticated connection,
   * and whether its sender asked to pump file bodies, and says whether it is taken (false: the
   * receiver already gets its data over NATS); after the first authenticated connection the
   * endpoint stops listening. `pump`: offers the pumped path (file-pump.ts).
   */
  static async open(
    host: string,
    onLink: (link: FrameSocket, pumped: boolean) => boolean,
    pump = false,
    keyed?: { imageKey: Uint8Array; transferId: string },
  ): Promise<DirectEndpoint> {
    const token = keyed ? directToken(keyed.imageKey, keyed.transferId) : randomBytes(TOKEN_BYTES).toString('hex');
    const expected = Buffer.from(token);
    let endpoint: DirectEndpoint | undefined;
    const server = createServer((socket: Socket) => {
      const link = new FrameSocket(socket, HELLO_MAX_BYTES);
      const timer = setTimeout(() => link.destroy(), DIRECT_HELLO_TIMEOUT_MS);
      let greeted = false;
      link.attach({
        onFrame: (bytes) => {
          if (greeted) return;
          greeted = true;
          clearTimeout(timer);
          let pumped: boolean;
          try {
            const hello = parseMessage(HelloFrame, decode(bytes));
            if (!timingSafeEqual(Buffer.from(hello.token), expected)) throw new Error('wrong token');
            pumped = hello.pump === true;
            // A pump asked for where none was offered: a broken or hostile sender.
            if (pumped && !pump) throw new Error('pump not offered');
          } catch {
            link.destroy();
            return;
          }
          if (endpoint === undefined || endpoint.claimed) return link.destroy();
          endpoint.claimed = true;
          endpoint.close();
          if (!onLink(link, pumped)) link.destroy();
        },
        onClose: () => clearTimeout(timer),
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new FerryError(ErrorCode.UNAVAILABLE, `cannot listen for a direct transfer on ${host}: ${err.message}`, { cause: err })),
      );
      server.listen(0, host, () => resolve());
    });
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    endpoint = new DirectEndpoint(server, host, port, token, pump, keyed !== undefined);
    return endpoint;
  }

  /** Whether the token is derived from the migration's key (the offer then names none). */
  get derivedToken(): boolean {
    return this.keyed;
  }

  /** Set once a connection presented the token; the endpoint is then spent. */
  claimed = false;

  /** Stops listening (an accepted link stays open). */
  close(): void {
    this.server.close();
  }
}

/** `pumped`: the receiver offered the pumped path and the sender asked for it in its hello. */
export type DirectConnectResult = { link: FrameSocket; pumped: boolean } | { reason: string };

/**
 * Sender side: asks the receiver for an endpoint and connects to it. Never throws for an
 * unreachable or unwilling receiver; it returns why, and the caller uses NATS (or fails, when
 * the direct path was required).
 */
export async function connectDirect(
  nc: NatsConnection,
  transferId: string,
  maxFrameBytes: number,
  timeouts: { offerMs: number; connectMs: number } = { offerMs: DIRECT_OFFER_TIMEOUT_MS, connectMs: DIRECT_CONNECT_TIMEOUT_MS },
  canPump = false,
  /** With the migration's key: the offer must carry its tag, and the token is derived, not taken from it. */
  keyed?: { imageKey: Uint8Array; auth: ControlFrameAuthenticator },
): Promise<DirectConnectResult> {
  let offer: DirectReplyFrame;
  try {
    const reply = await nc.request(subjects.xferDirect(transferId), encode({ v: PROTOCOL_VERSION, t: 'direct' }), { timeout: timeouts.offerMs });
    offer = parseMessage(DirectReplyFrame, decode(reply.data));
  } catch (err) {
    return { reason: `no direct offer: ${toFerryError(err).message}` };
  }
  if (offer.t === 'decline') return { reason: 'the receiver declined the direct path' };
  let token: string;
  if (keyed) {
    // Only the receiver holding the key can say where to connect; the token never crossed the bus.
    if (!keyed.auth.verify({ t: 'offer', host: offer.host, port: offer.port, pump: offer.pump === true, ...(offer.mac ? { mac: offer.mac } : {}) })) {
      return { reason: 'the direct offer is not authenticated with the migration key (another principal answered the direct subject)' };
    }
    token = directToken(keyed.imageKey, transferId);
  } else if (offer.token !== undefined) {
    token = offer.token;
  } else {
    return { reason: 'the direct offer names no token' };
  }
  // A tagged result, not `instanceof Error`: errors from Node's internals may come from another realm (jest).
  const connected = await new Promise<{ socket: Socket } | { error: string }>((resolve) => {
    const s = tcpConnect({ host: offer.host, port: offer.port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: `timed out after ${timeouts.connectMs} ms` });
    }, timeouts.connectMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve({ socket: s });
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      resolve({ error: err.message });
    });
  });
  if ('error' in connected) return { reason: `cannot connect to ${offer.host}:${offer.port}: ${connected.error}` };
  const socket = connected.socket;
  const link = new FrameSocket(socket, maxFrameBytes);
  const pumped = canPump && offer.pump === true;
  link.send(encode({ v: PROTOCOL_VERSION, t: 'hello', token, ...(pumped ? { pump: true } : {}) }));
  return { link, pumped };
}
