/**
 * Source side of an image transfer: streams a finished image directory as chunk frames, over a
 * direct TCP connection to the receiver when it offers one and it can be reached, else on the
 * transfer's NATS data subject, keeping at most `windowChunks` frames unacknowledged.
 */
import type { NatsConnection } from 'nats';
import {
  decode,
  encode,
  ErrorCode,
  FerryError,
  parseMessage,
  PROTOCOL_VERSION,
  silentLogger,
  StreamTransport,
  subjects,
  toFerryError,
  type ErrorBody,
  type Logger,
} from '@ferry/protocol';
import { assertImageKey, FrameSealer, SEALED_HEAD_BYTES, SEALED_TAIL_BYTES, type InPlaceAead } from './chunk-cipher';
import { ControlFrameAuthenticator, type ControlFrameFields } from './control-frame-auth';
import { connectDirect, DIRECT_CONNECT_TIMEOUT_MS, DIRECT_OFFER_TIMEOUT_MS } from './direct-path';
import { fileBodyKey, fileBodyNoncePrefix, MAX_PUMPED_FILE_SEQ, watchPumpProgress, type FilePump } from './file-pump';
import type { FrameSocket } from './frame-socket';
import { AckFrame, CtlFrame, FRAME_OVERHEAD_BYTES, GoFrame } from './frames';
import { IdleWatchdog } from './idle-watchdog';
import { imageFrames, openImageFile, pumpedImageFrames, streamedImageFrames, type BodyStep, type EncodedFrame, type LiveBodyStep, type LiveImageFile } from './image-frames';
import { ChunkBufferPool, type FrameReserve } from './chunk-frame-writer';
import { listImageFiles, type ImageFile } from './list-image-files';
import { readAhead } from './read-ahead';
import type { TransferStats, TransferTransport } from './transfer-stats';

/**
 * File bytes per chunk frame, lowered to fit the server's max_payload (ferry's clusters allow
 * 8 MB). 4 MiB frames moved 256 MiB at 128 MB/s through NATS where 512 KiB frames managed 72
 * (bench/transfer-micro.js): the per-frame costs (parse, ack, schema, write call) dominate.
 */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/**
 * Bytes in flight, unacknowledged. Loopback and a LAN have a bandwidth-delay product far below
 * this; what it covers is the receiver's write of one chunk (a tmpfs write of 4 MiB takes ~3 ms)
 * while the next ones are already on the way.
 */
export const DEFAULT_WINDOW_BYTES = 32 * 1024 * 1024;
/** Unacknowledged frames in flight at the default chunk size. */
export const DEFAULT_WINDOW_CHUNKS = DEFAULT_WINDOW_BYTES / DEFAULT_CHUNK_BYTES;
/** The receiver is considered gone when acks make no progress for this long. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/** nats-server's default max_payload, assumed when the connection has not reported one. */
export const NATS_DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
/** An ack frame is a few bytes; anything much larger on the direct connection is a broken peer. */
const MAX_ACK_FRAME_BYTES = 1024;
/** How long a failed pump waits for the receiver's error frame, which says why, before reporting its own. */
const RECEIVER_REASON_WAIT_MS = 1_000;
/** Chunks read from disk ahead of the one waiting for room in the window. */
export const READ_AHEAD_FRAMES = 4;

export interface ImageSenderOptions {
  /** Largest file payload per chunk frame, in bytes; lowered to fit the server's max_payload. */
  chunkBytes: number;
  /** Most frames sent and not yet acknowledged (flow control); default DEFAULT_WINDOW_BYTES worth of chunks. */
  windowChunks: number;
  /** Fail with DEADLINE_EXCEEDED when frames are in flight and acks make no progress for this long. */
  idleTimeoutMs: number;
  /**
   * Which path the bytes take. `auto`: direct when the receiver offers one and it can be reached,
   * else NATS. `direct`: direct or fail (UNAVAILABLE). `nats`: never try the direct path.
   */
  transport: StreamTransport;
  /** How long to wait for the receiver's direct offer, and then for the TCP connect, each. */
  directTimeoutMs: number;
  /** Per-migration key: every data frame is sealed with it (chunk-cipher.ts); null: frames go in clear. */
  imageKey?: Uint8Array | null;
  /** With a key: file bodies go through this pump when the receiver offers the pumped direct path (file-pump.ts). */
  filePump?: FilePump | null;
  /** Seals frames in place (chunk-cipher.ts); default node:crypto. */
  frameAead?: InPlaceAead | null;
  /**
   * Files still being written (CRIU's image streamer): sent first, each as it comes, through the
   * pump while the dump runs. Where the transfer is not pumped (no direct path, no pump on the
   * receiver) each is written into `dir` instead and sent with the rest. `dir` is listed once this
   * ends, so whoever feeds it ends it only when the directory is complete.
   */
  live?: AsyncIterable<LiveImageFile> | null;
  logger?: Logger;
}

export function defaultImageSenderOptions(): ImageSenderOptions {
  return {
    chunkBytes: DEFAULT_CHUNK_BYTES,
    windowChunks: DEFAULT_WINDOW_CHUNKS,
    idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
    transport: 'auto',
    directTimeoutMs: Math.max(DIRECT_OFFER_TIMEOUT_MS, DIRECT_CONNECT_TIMEOUT_MS),
  };
}

/**
 * Fills in defaults, validates, and fits the chunk size under the server's max_payload with
 * room for the frame's other fields (NATS rejects a larger message outright).
 */
export function compileImageSenderOptions(
  options: Partial<ImageSenderOptions>,
  maxPayloadBytes = NATS_DEFAULT_MAX_PAYLOAD_BYTES,
): Required<ImageSenderOptions> {
  const merged = { ...defaultImageSenderOptions(), ...options };
  for (const key of ['chunkBytes', 'windowChunks', 'idleTimeoutMs', 'directTimeoutMs'] as const) {
    if (!Number.isInteger(merged[key]) || merged[key] < 1) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${key} must be a positive integer, got ${String(merged[key])}`);
    }
  }
  const roomBytes = maxPayloadBytes - FRAME_OVERHEAD_BYTES;
  if (roomBytes < FRAME_OVERHEAD_BYTES) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the NATS server's max_payload of ${maxPayloadBytes} bytes is too small for image chunks`);
  }
  if (!StreamTransport.safeParse(merged.transport).success) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `transport must be auto, direct or nats, got ${String(merged.transport)}`);
  }
  if (merged.imageKey) assertImageKey(merged.imageKey);
  const chunkBytes = Math.min(merged.chunkBytes, roomBytes);
  return {
    chunkBytes,
    // Smaller chunks (a server with a small max_payload) get more of them, the same bytes in flight.
    windowChunks: options.windowChunks ?? Math.max(2, Math.ceil(DEFAULT_WINDOW_BYTES / chunkBytes)),
    idleTimeoutMs: merged.idleTimeoutMs,
    transport: merged.transport,
    directTimeoutMs: merged.directTimeoutMs,
    imageKey: merged.imageKey ?? null,
    filePump: merged.filePump ?? null,
    frameAead: merged.frameAead ?? null,
    live: merged.live ?? null,
    logger: merged.logger ?? silentLogger,
  };
}

/**
 * Sends every regular file under `dir` to the ImageReceiver listening on `transferId`.
 * Resolves once the receiver acknowledged the end frame, i.e. wrote and verified every file.
 * Rejects with the receiver's error code if it reports one, DEADLINE_EXCEEDED if it goes
 * silent, INVALID_ARGUMENT for an unsendable directory; on its own failure it tells the
 * receiver with an abort frame.
 */
export async function sendImage(
  nc: NatsConnection,
  transferId: string,
  dir: string,
  opts: Partial<ImageSenderOptions> = {},
): Promise<TransferStats> {
  const options = compileImageSenderOptions(opts, nc.info?.max_payload);
  const log = options.logger;
  const startedMs = performance.now();
  const dataSubject = subjects.xferData(transferId);
  const ackSubject = subjects.xferAck(transferId);
  const ctlSubject = subjects.xferCtl(transferId);
  // With live files the directory is complete only once they have all come.
  let files: ImageFile[] | undefined = options.live === null ? await listImageFiles(dir) : undefined;

  let lastSentSeq = -1;
  let ackedSeq = -1;
  let failure: FerryError | undefined;
  let failedByReceiver = false;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  /** Stops a body's pump on failure. */
  const pumpAbort = new AbortController();
  /**
   * Rejects with the failure: the send loop also waits for its next frame, which a live source may
   * hold back for as long as the workload runs (a first pass waiting to be acknowledged, then the
   * dump); a receiver that fails meanwhile must end the transfer then, not when the source moves.
   */
  let rejectFailed!: (err: FerryError) => void;
  const failed = new Promise<never>((_resolve, reject) => (rejectFailed = reject));
  failed.catch(() => undefined);
  const fail = (err: FerryError): void => {
    if (failure !== undefined) return;
    failure = err;
    pumpAbort.abort();
    notify();
    rejectFailed(err);
  };
  /** Waits for acks (or a failure) until `ready()` holds. Only the send loop waits. */
  const waitUntil = async (ready: () => boolean): Promise<void> => {
    while (failure === undefined && !ready()) await new Promise<void>((resolve) => (wake = resolve));
    if (failure !== undefined) throw failure;
  };

  const watchdog = new IdleWatchdog(options.idleTimeoutMs, (idleMs) =>
    fail(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `no ack progress from the receiver of transfer ${transferId} for ${Math.round(idleMs)} ms`)),
  );

  // With a key, only acks and errors the receiver tagged count (control-frame-auth.ts).
  const auth = options.imageKey ? new ControlFrameAuthenticator(options.imageKey, transferId) : undefined;
  let ignoredControlFrames = 0;
  /** With a key: the frame if authentic, else undefined (counted, first one logged); without a key the parser's errors propagate. */
  const authentic = <T extends ControlFrameFields>(parse: () => T, kind: string): T | undefined => {
    if (auth === undefined) return parse();
    try {
      const frame = parse();
      if (auth.verify(frame)) return frame;
    } catch {
      // Not a frame at all: ignored like a forged one.
    }
    if (ignoredControlFrames++ === 0) log.warn({ transferId, kind }, 'ignored a control frame not authenticated with the migration key');
    return undefined;
  };

  /** Frames sent whose sender wants to hear of their ack (a live file's eof, a pooled chunk), in seq order. */
  const awaitingAck: { seq: number; onAcked: () => void }[] = [];
  /** Chunk buffers back from acknowledged frames: a window's worth and the read-ahead. */
  const chunkBuffers = new ChunkBufferPool(options.windowChunks + READ_AHEAD_FRAMES + 2);
  let reserve: FrameReserve | undefined;
  /** Handles one ack, from NATS or the direct connection; throws for a bad one. */
  const onAck = (bytes: Uint8Array): void => {
    const ack = authentic(() => parseMessage(AckFrame, decode(bytes)), 'ack');
    if (ack === undefined) return;
    if (ack.seq > lastSentSeq) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `ack for frame ${ack.seq}, but only ${lastSentSeq} was sent`);
    }
    if (ack.seq <= ackedSeq) return;
    ackedSeq = ack.seq;
    while (awaitingAck.length > 0 && awaitingAck[0]!.seq <= ackedSeq) awaitingAck.shift()!.onAcked();
    watchdog.touch();
    if (ackedSeq === lastSentSeq) watchdog.stop();
    notify();
  };
  // Subscribed before the first publish on the same connection, so no ack can be missed.
  const ackSub = nc.subscribe(ackSubject, {
    callback: (err, msg) => {
      if (err) return fail(toFerryError(err, ErrorCode.UNAVAILABLE));
      try {
        onAck(msg.data);
      } catch (e) {
        fail(toFerryError(e, ErrorCode.INVALID_ARGUMENT));
      }
    },
  });
  const ctlSub = nc.subscribe(ctlSubject, {
    callback: (err, msg) => {
      if (err) return fail(toFerryError(err, ErrorCode.UNAVAILABLE));
      try {
        const ctl = authentic(() => parseMessage(CtlFrame, decode(msg.data)), 'ctl');
        // Our own abort comes back to us when sender and receiver share a connection.
        if (ctl === undefined || ctl.t !== 'error') return;
        failedByReceiver = true;
        const remote = FerryError.fromBody(ctl as ErrorBody);
        fail(new FerryError(remote.code, `receiver failed: ${remote.message}`, { cause: remote }));
      } catch (e) {
        fail(toFerryError(e, ErrorCode.INVALID_ARGUMENT));
      }
    },
  });

  let chunks = 0;
  let bytes = 0;
  let filesSent = 0;
  let link: FrameSocket | undefined;
  /** Pumped direct path: the connection's fd, Node no longer reading it. */
  let pumpFd: number | undefined;
  let done = false;
  let frames: AsyncGenerator<EncodedFrame | BodyStep | LiveBodyStep> | undefined;
  /** The send loop read every frame (see the finally block). */
  let framesEnded = false;
  try {
    let transport: TransferTransport = 'nats';
    if (options.transport !== 'nats') {
      const timeouts = { offerMs: options.directTimeoutMs, connectMs: options.directTimeoutMs };
      const canPump = options.filePump !== null && options.imageKey !== null;
      const keyed = options.imageKey && auth ? { imageKey: options.imageKey, auth } : undefined;
      const direct = await connectDirect(nc, transferId, MAX_ACK_FRAME_BYTES, timeouts, canPump, keyed);
      if ('link' in direct) {
        link = direct.link;
        transport = 'direct';
        /** Pumped: set once the receiver's go came back. */
        let wentAhead = !direct.pumped;
        link.attach({
          onFrame: (bytes) => {
            try {
              if (wentAhead) return onAck(bytes);
              // A pumped connection carries one frame back: the receiver's go.
              parseMessage(GoFrame, decode(bytes));
              wentAhead = true;
              notify();
            } catch (e) {
              fail(toFerryError(e, ErrorCode.INVALID_ARGUMENT));
            }
          },
          onClose: (err) => {
            if (!done) fail(err ?? new FerryError(ErrorCode.TRANSFER_FAILED, 'direct connection closed'));
          },
        });
        if (direct.pumped) {
          const timer = setTimeout(
            () => fail(new FerryError(ErrorCode.UNAVAILABLE, `the receiver of transfer ${transferId} did not take the pumped connection within ${options.directTimeoutMs} ms`)),
            options.directTimeoutMs,
          );
          await waitUntil(() => wentAhead).finally(() => clearTimeout(timer));
          pumpFd = options.filePump!.socketFd(link.socket);
        }
      } else if (options.transport === 'direct') {
        throw new FerryError(ErrorCode.UNAVAILABLE, `direct path to the receiver of transfer ${transferId} unavailable: ${direct.reason}`);
      } else {
        log.info({ transferId, reason: direct.reason }, 'direct path unavailable, sending over NATS');
      }
    }
    if (pumpFd !== undefined) {
      const listed = files;
      frames = pumpedImageFrames(async () => (files = listed ?? (await listImageFiles(dir))), options.live ?? undefined);
    } else {
      // With the in-place AES-GCM, chunks are read with room for their envelope: sealed with no copy.
      reserve = options.imageKey && options.frameAead ? { head: SEALED_HEAD_BYTES, tail: SEALED_TAIL_BYTES } : undefined;
      const layout = { chunkBytes: options.chunkBytes, withCrc: options.imageKey === null, reserve, pool: chunkBuffers };
      if (options.live !== null) {
        // Live files go out in chunks as CRIU writes them (streamed), the rest once the dump is over.
        const listed = files;
        frames = readAhead(streamedImageFrames(options.live, async () => (files = listed ?? (await listImageFiles(dir))), layout), READ_AHEAD_FRAMES);
      } else {
        files ??= await listImageFiles(dir);
        frames = readAhead(imageFrames(files, layout.chunkBytes, layout.withCrc, reserve, chunkBuffers), READ_AHEAD_FRAMES);
      }
    }
    // Pumped: the connection carries the bodies only; control frames go over NATS.
    const send = link !== undefined && pumpFd === undefined ? (b: Uint8Array) => link!.send(b) : (b: Uint8Array) => nc.publish(dataSubject, b);
    // Sealed at the frame level, so both paths carry only ciphertext.
    const sealer = options.imageKey ? new FrameSealer(options.imageKey, transferId, options.frameAead) : undefined;
    const publish = (frame: { seq: number; bytes: Uint8Array; envelope?: Buffer }) =>
      send(
        sealer === undefined
          ? frame.bytes
          : frame.envelope !== undefined && reserve !== undefined && sealer.sealsInPlace
            ? sealer.sealReserved(frame.seq, frame.envelope)
            : sealer.seal(frame.seq, frame.bytes),
      );
    log.debug({ transferId, transport, live: options.live !== null, chunkBytes: options.chunkBytes, windowChunks: options.windowChunks }, 'sending image');
    const bodyKey = pumpFd !== undefined ? fileBodyKey(options.imageKey!, transferId) : undefined;
    /**
     * After a pump failed: the failure already known, else the receiver's reason if its error frame
     * comes within a moment. A receiver that refuses a body (its limits, a bad frame) closes the
     * connection and says why over NATS; the pump sees only the reset, and that alone would tell
     * the operator nothing they can act on.
     */
    const receiversReason = async (): Promise<FerryError | undefined> => {
      const deadline = performance.now() + RECEIVER_REASON_WAIT_MS;
      while (failure === undefined && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return failure;
    };
    /** One file body through the pump, the idle clock following the file's offset. */
    const sendBody = async (step: BodyStep): Promise<number> => {
      if (step.fileSeq > MAX_PUMPED_FILE_SEQ) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `too many files for the pumped path`);
      const pump = options.filePump!;
      const { file } = step;
      const fh = await openImageFile(file);
      const stopWatching = watchPumpProgress(() => pump.offset(fh.fd), options.idleTimeoutMs, () => watchdog.touch());
      try {
        if (!watchdog.running) watchdog.start();
        const counts = await pump.pump(fh.fd, pumpFd!, 'seal', bodyKey!, fileBodyNoncePrefix(step.fileSeq), { signal: pumpAbort.signal }).catch(async (err: unknown) => {
          throw (await receiversReason()) ?? new FerryError(ErrorCode.TRANSFER_FAILED, `sending ${file.absolutePath}: ${toFerryError(err).message}`, { cause: err });
        });
        const { size: sizeNow } = await fh.stat();
        if (counts.bytesIn !== file.size || sizeNow !== file.size) {
          throw new FerryError(ErrorCode.TRANSFER_FAILED, `${file.absolutePath} changed size while being sent (${file.size} -> ${counts.bytesIn} bytes)`);
        }
        return counts.bytesIn;
      } finally {
        stopWatching();
        await fh.close();
      }
    };
    /**
     * A live file's body through the pump, to the end of its pipe. No idle clock of ours runs
     * meanwhile: a pipe has no offset to watch, and its pace is CRIU's. A dead receiver fails
     * the connection (the pump's write), a silent one trips the receiver's own clock or the
     * coordinator's deadline, and a failure stops the pump, so CRIU's next write fails too.
     */
    const sendLiveBody = async (step: LiveBodyStep): Promise<number> => {
      if (step.fileSeq > MAX_PUMPED_FILE_SEQ) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `too many files for the pumped path`);
      watchdog.stop();
      const counts = await options.filePump!.pump(step.file.fd, pumpFd!, 'seal', bodyKey!, fileBodyNoncePrefix(step.fileSeq), { signal: pumpAbort.signal }).catch(async (err: unknown) => {
        throw (await receiversReason()) ?? new FerryError(ErrorCode.TRANSFER_FAILED, `streaming ${step.file.path}: ${toFerryError(err).message}`, { cause: err });
      });
      step.sentBytes = counts.bytesIn;
      return counts.bytesIn;
    };
    for (;;) {
      const pendingNext = frames.next();
      // Left behind if the transfer fails first: its own failure is not this transfer's to report.
      pendingNext.catch(() => undefined);
      const next = await Promise.race([pendingNext, failed]);
      if (next.done) {
        framesEnded = true;
        break;
      }
      const frame = next.value;
      if (frame.kind === 'body' || frame.kind === 'live') {
        bytes += frame.kind === 'body' ? await sendBody(frame) : await sendLiveBody(frame);
        chunks += 1;
        continue;
      }
      if (frame.kind === 'eof') filesSent += 1;
      await waitUntil(() => frame.seq - ackedSeq <= options.windowChunks);
      if (frame.onAcked) awaitingAck.push({ seq: frame.seq, onAcked: frame.onAcked });
      // Its buffer is reused once the receiver has the frame (acknowledged), never before.
      const { envelope } = frame;
      if (envelope !== undefined) awaitingAck.push({ seq: frame.seq, onAcked: () => chunkBuffers.give(envelope) });
      publish(frame);
      lastSentSeq = frame.seq;
      if (!watchdog.running) watchdog.start();
      if (frame.kind === 'chunk') {
        chunks += 1;
        bytes += frame.payloadBytes;
      }
    }
    await waitUntil(() => ackedSeq === lastSentSeq);
    done = true;
    const stats = { files: filesSent, bytes, chunks, elapsedMs: performance.now() - startedMs, transport };
    log.info({ transferId, ...stats }, 'image sent');
    return stats;
  } catch (err) {
    const fe = toFerryError(err, ErrorCode.TRANSFER_FAILED);
    if (!failedByReceiver) {
      try {
        const abort = { t: 'abort' as const, code: fe.code, message: fe.message };
        nc.publish(ctlSubject, encode({ v: PROTOCOL_VERSION, ...(auth ? auth.sign(abort) : abort) }));
      } catch (publishErr) {
        log.warn({ transferId, err: publishErr }, 'could not tell the receiver that the transfer is aborted');
      }
    }
    log.warn({ transferId, code: fe.code, err: fe.message }, 'image transfer failed');
    throw fe;
  } finally {
    done = true;
    link?.end();
    watchdog.stop();
    ackSub.unsubscribe();
    ctlSub.unsubscribe();
    // Closes the file being read if we stopped half-way. Awaited only when the frames were read to
    // their end: after a failure a next() may be pending (ours, or read-ahead's) on a live source
    // that gives up only once the caller learns this transfer failed, so waiting here would hang.
    const closing = frames?.return(undefined).catch(() => undefined);
    if (framesEnded) await closing;
  }
}

