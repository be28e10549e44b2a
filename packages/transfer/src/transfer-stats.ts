/** How the bytes travelled: through nats-server, or over a TCP connection between the two agents. */
export type TransferTransport = 'nats' | 'direct';

/** What one image transfer moved, as seen by the side reporting it. */
export interface TransferStats {
  /** Regular files transferred (empty files included). */
  files: number;
  /** Payload bytes (file contents), not counting frame headers. */
  bytes: number;
  /** Chunk frames; an empty file has none. */
  chunks: number;
  /** Sender: from start to the final ack. Receiver: from start() to the verified end. */
  elapsedMs: number;
  transport: TransferTransport;
}
