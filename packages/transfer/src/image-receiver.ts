/**
 * Target side of an image transfer: writes the frames arriving on the transfer's data subject
 * into a directory, acknowledging each frame once it is written, verifying every file.
 */
import { realpathSync, statSync } from 'node:fs';
import type { NatsConnection, Subscription } from 'nats';
import {
  decode,
  encode,
  ErrorCode,
  FerryError,
  MAX_CONTROL_MESSAGE_BYTES,
  parseMessage,
  PROTOCOL_VERSION,
  subjects,
  toFerryError,
  type Logger,
} from '@ferry/protocol';
import { FrameOpener } from './chunk-cipher';
import { ControlFrameAuthenticator } from './control-frame-auth';
import { DirectEndpoint } from './direct-path';
import { fileBodyKey, fileBodyNoncePrefix, MAX_PUMPED_FILE_SEQ, watchPumpProgress } from './file-pump';
import type { FrameSocket } from './frame-socket';
import { CtlFrame, DataFrame, DirectRequestFrame } from './frames';
import { IdleWatchdog } from './idle-watchdog';
import { resolveImagePath } from './image-path';
import { IncomingFile } from './incoming-file';
import { recycleNatsPayload } from './nats-large-payloads';
import { compileImageReceiverOptions, MAX_QUEUED_FRAMES, type ImageReceiverOptions } from './image-receiver-options';

export {
  compileImageReceiverOptions,
  defaultImageReceiverOptions,
  DEFAULT_MAX_FILE_BYTES,
  DEFAULT_MAX_FILES,
  DEFAULT_MAX_TOTAL_BYTES,
  DEFAULT_RECEIVE_IDLE_TIMEOUT_MS,
  MAX_QUEUED_FRAMES,
  type ImageReceiverOptions,
} from './image-receiver-options';
import type { TransferStats, TransferTransport } from './transfer-stats';

/**
 * Receives one image. Create it with start() before the sender begins (it subscribes at once);
 * `done` settles exactly once. A rejection of `done` nobody listens to does not crash the process.
 */
export class ImageReceiver {
  /** Resolves when every file is written, verified and closed; rejects with a FerryError. */
  readonly done: Promise<TransferStats>;

  private resolveDone!: (stats: TransferStats) => void;
  private rejectDone!: (err: FerryError) => void;
  private readonly queue: Uint8Array[] = [];
  private draining = false;
  private finished = false;
  private expectedSeq = 0;
  private current: IncomingFile | undefined;
  private readonly knownDirs = new Set<string>();
  private filesDone = 0;
  private filesDeclared = 0;
  private bytesDeclared = 0;
  private bytesWritten = 0;
  private chunks = 0;
  private readonly startedMs = performance.now();
  private readonly subscriptions: Subscription[] = [];
  private readonly watchdog: IdleWatchdog;
  /** Watches for the first frame only; then `watchdog` takes over. */
  private readonly firstFrameWatchdog: IdleWatchdog;
  private gotFirstFrame = false;
  private readonly log: Logger;
  private readonly maxFrameBytes: number;
  /** How data arrives: undecided until the first data frame or an authenticated direct connection. */
  private transport: TransferTransport | undefined;
  private endpoint: Promise<DirectEndpoint | undefined> = Promise.resolve(undefined);
  private link: FrameSocket | undefined;
  private readonly opener: FrameOpener | undefined;
  /** With a key: tags our acks and errors, and checks the sender's aborts. */
  private readonly auth: ControlFrameAuthenticator | undefined;
  private ignoredControlFrames = 0;
  /** Pumped direct path: the connection's fd (Node no longer reads it) and the bodies' key. */
  private pumpFd: number | undefined;
  private pumpKey: Buffer | undefined;
  /** Stops a body's pump on failure; the connection is closed only once the pump let go of it. */
  private readonly pumpAbort = new AbortController();
  private pumping: Promise<unknown> | undefined;
  /** Bytes of the body being pumped so far (for progress()). */
  private bodyBytes = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly transferId: string,
    private readonly root: string,
    private readonly options: Required<ImageReceiverOptions>,
  ) {
    this.log = options.logger;
    this.done = new Promise<TransferStats>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined);
    // No NATS message is larger than the server's max_payload; nothing bigger is worth decoding.
    this.maxFrameBytes = Math.max(nc.info?.max_payload ?? 0, MAX_CONTROL_MESSAGE_BYTES);
    this.opener = options.imageKey ? new FrameOpener(options.imageKey, transferId, options.frameAead) : undefined;
    this.auth = options.imageKey ? new ControlFrameAuthenticator(options.imageKey, transferId) : undefined;
    this.watchdog = new IdleWatchdog(options.idleTimeoutMs, (idleMs) =>
      this.fail(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `nothing received for transfer ${transferId} for ${Math.round(idleMs)} ms`)),
    );
    this.firstFrameWatchdog = new IdleWatchdog(options.firstFrameTimeoutMs, (idleMs) =>
      this.fail(new FerryError(ErrorCode.DEADLINE_EXCEEDED, `no frame of transfer ${transferId} arrived within ${Math.round(idleMs)} ms: the source's dump did not finish or its agent is gone`)),
    );
  }

  /**
   * Subscribes to the transfer's subjects and starts the idle clock. `dir` must exist (the
   * caller creates it 0700 and owns it: after a failure, partial files stay for it to remove).
   * Throws INVALID_ARGUMENT for a bad transfer id, options or directory.
   */
  static start(nc: NatsConnection, transferId: string, dir: string, opts: Partial<ImageReceiverOptions> = {}): ImageReceiver {
    const options = compileImageReceiverOptions(opts);
    const dataSubject = subjects.xferData(transferId);
    const ctlSubject = subjects.xferCtl(transferId);
    let root: string;
    try {
      // Resolved once: every file name is then checked against a symlink-free prefix.
      root = realpathSync(dir);
      if (!statSync(root).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `image directory ${dir} is unusable: ${(err as Error).message}`, { cause: err });
    }
    const receiver = new ImageReceiver(nc, transferId, root, options);
    if (options.directListenAddress !== '') {
      const offerPump = options.filePump !== null && options.imageKey !== null;
      const keyed = options.imageKey ? { imageKey: options.imageKey, transferId } : undefined;
      receiver.endpoint = DirectEndpoint.open(options.directListenAddress, (link, pumped) => receiver.takeLink(link, pumped), offerPump, keyed).catch((err: unknown) => {
        // Not fatal: the sender is declined and uses NATS.
        receiver.log.warn({ transferId, err: toFerryError(err).message }, 'no direct path offered');
        return undefined;
      });
    }
    receiver.subscriptions.push(
      nc.subscribe(dataSubject, { callback: (err, msg) => (err ? receiver.failOnSubscription(err) : receiver.enqueueFromNats(msg.data)) }),
      nc.subscribe(ctlSubject, { callback: (err, msg) => (err ? receiver.failOnSubscription(err) : receiver.handleCtl(msg.data)) }),
      nc.subscribe(subjects.xferDirect(transferId), {
        callback: (err, msg) => {
          if (err) return receiver.failOnSubscription(err);
          receiver
            .answerDirect(msg.data)
            .then((reply) => msg.respond(encode(reply)))
            .catch((e: unknown) => receiver.log.warn({ transferId, err: toFerryError(e).message }, 'could not answer a direct-path request'));
        },
      }),
    );
    receiver.firstFrameWatchdog.start();
    return receiver;
  }

  /** The offer for a sender asking for the direct path, or a decline. */
  private async answerDirect(bytes: Uint8Array): Promise<Record<string, unknown>> {
    const decline = { v: PROTOCOL_VERSION, t: 'decline' };
    try {
      parseMessage(DirectRequestFrame, decode(bytes));
    } catch {
      return decline;
    }
    const endpoint = await this.endpoint;
    if (endpoint === undefined || endpoint.claimed || this.transport !== undefined || this.finished) return decline;
    const pump = endpoint.pump ? { pump: true } : {};
    // Keyed: no token (the sender derives it) and a tag, so only we can send a sender somewhere.
    if (this.auth && endpoint.derivedToken) {
      return { v: PROTOCOL_VERSION, t: 'offer', host: endpoint.host, port: endpoint.port, ...pump, mac: this.auth.tag({ t: 'offer', host: endpoint.host, port: endpoint.port, pump: endpoint.pump }) };
    }
    return { v: PROTOCOL_VERSION, t: 'offer', host: endpoint.host, port: endpoint.port, token: endpoint.token, ...pump };
  }

  /** An authenticated direct connection: taken unless data already comes over NATS. */
  private takeLink(link: FrameSocket, pumped: boolean): boolean {
    if (this.transport !== undefined || this.finished) return false;
    if (pumped) return this.takePumpedLink(link);
    this.transport = 'direct';
    this.link = link;
    link.setMaxFrameBytes(this.maxFrameBytes);
    link.attach({
      onFrame: (bytes) => this.enqueue(bytes),
      onClose: (err) => {
        if (!this.finished) this.fail(err ?? new FerryError(ErrorCode.TRANSFER_FAILED, 'direct connection closed before the end of the image'));
      },
    });
    this.log.debug({ transferId: this.transferId }, 'receiving over the direct path');
    return true;
  }

  /**
   * A pumped connection: Node stops reading it (the bodies' pumps will), the sender is told to
   * go, and the control frames come over NATS from now on.
   */
  private takePumpedLink(link: FrameSocket): boolean {
    const { filePump, imageKey } = this.options;
    if (filePump === null || imageKey === null) return false;
    try {
      this.pumpFd = filePump.socketFd(link.socket);
    } catch (err) {
      this.log.warn({ transferId: this.transferId, err: toFerryError(err).message }, 'direct connection cannot be pumped');
      return false;
    }
    this.pumpKey = fileBodyKey(imageKey, this.transferId);
    this.transport = 'direct';
    this.link = link;
    link.attach({
      // Node no longer reads it: a frame here means it did, and a body's bytes went astray.
      onFrame: () => this.fail(new FerryError(ErrorCode.INTERNAL, 'a frame was read from the pumped connection')),
      onClose: (err) => {
        if (!this.finished) this.fail(err ?? new FerryError(ErrorCode.TRANSFER_FAILED, 'direct connection closed before the end of the image'));
      },
    });
    link.send(encode({ v: PROTOCOL_VERSION, t: 'go' }));
    this.log.debug({ transferId: this.transferId }, 'receiving file bodies through the pump');
    return true;
  }

  private enqueueFromNats(bytes: Uint8Array): void {
    if (this.transport === 'direct' && this.pumpFd === undefined) {
      // One path per transfer: frames on two paths could interleave out of order.
      this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, 'data frame over NATS during a direct transfer'));
      return;
    }
    if (this.transport === undefined) {
      this.transport = 'nats';
      void this.endpoint.then((e) => e?.close());
    }
    this.enqueue(bytes);
  }

  /**
   * Resolves once the server has registered the subscriptions. Only needed when the sender
   * is told to start over another connection by some route other than a NATS message sent
   * after start() on this same connection (which the server already orders after the subscribe).
   */
  async ready(): Promise<void> {
    await this.endpoint;
    await this.nc.flush();
  }

  /** File bytes written and files completed so far. */
  progress(): { bytes: number; files: number } {
    return { bytes: this.bytesWritten + this.bodyBytes, files: this.filesDone };
  }

  /** Stops receiving, rejects `done` with TRANSFER_FAILED and tells the sender. */
  abort(reason: string): void {
    this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, `receiver aborted: ${reason}`));
  }

  private enqueue(bytes: Uint8Array): void {
    if (this.finished) return;
    if (!this.gotFirstFrame) {
      this.gotFirstFrame = true;
      this.firstFrameWatchdog.stop();
      this.watchdog.start();
    }
    this.watchdog.touch();
    this.queue.push(bytes);
    if (this.queue.length > MAX_QUEUED_FRAMES) {
      this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, `more than ${MAX_QUEUED_FRAMES} frames queued: the sender ignores the flow-control window`));
      return;
    }
    if (!this.draining) void this.drain();
  }

  /** Handles queued frames one at a time, in arrival order; writes never overlap. */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (!this.finished && this.queue.length > 0) {
        const bytes = this.queue.shift()!;
        await this.handleData(bytes);
        // Written: nothing holds it now, so a large NATS message's buffer can take the next one.
        recycleNatsPayload(bytes);
        this.watchdog.touch();
      }
    } catch (err) {
      this.fail(toFerryError(err, ErrorCode.TRANSFER_FAILED));
    } finally {
      this.draining = false;
      // A failure while a write was in flight left the file open for us to close.
      if (this.finished && this.current !== undefined) {
        const file = this.current;
        this.current = undefined;
        await file.discard();
      }
    }
  }

  private async handleData(bytes: Uint8Array): Promise<void> {
    const plain = this.opener ? this.opener.open(bytes, this.expectedSeq, this.maxFrameBytes) : bytes;
    const frame = parseMessage(DataFrame, decode(plain, this.maxFrameBytes));
    if (frame.seq !== this.expectedSeq) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `expected frame ${this.expectedSeq}, got ${frame.seq}: frames were lost or reordered`);
    }
    switch (frame.t) {
      case 'file': {
        if (this.current !== undefined) {
          throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${JSON.stringify(frame.path)} started before ${JSON.stringify(this.current.path)} ended`);
        }
        if (frame.streamed && frame.size !== 0) {
          throw new FerryError(ErrorCode.INVALID_ARGUMENT, `streamed file ${JSON.stringify(frame.path)} declares a size`);
        }
        this.checkLimits(frame.path, frame.size);
        this.filesDeclared += 1;
        this.bytesDeclared += frame.size;
        // A pumped streamed body may go straight to a consumer (a sink) instead of a file here;
        // one streamed in chunks lands in the directory, and onFileReceived tells its consumer.
        const sink = frame.streamed && this.pumpFd !== undefined ? this.options.openSink?.(frame.path) : undefined;
        this.current = sink ? IncomingFile.forSink(frame, sink) : await IncomingFile.create(this.root, frame, this.knownDirs, this.opener === undefined);
        if (this.pumpFd !== undefined) await this.receiveBody(this.current, frame.seq);
        break;
      }
      case 'chunk': {
        if (this.pumpFd !== undefined) throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'chunk frame on a pumped transfer');
        const file = this.openFile(frame.path, 'chunk');
        // A streamed file's chunks count against the image's limit as they come.
        const bound = file.isStreamed ? Math.min(this.options.maxFileBytes, file.bytesWritten + this.options.maxTotalBytes - this.bytesDeclared) : 0;
        await file.write(frame.offset, frame.data, frame.crc, bound);
        if (file.isStreamed) this.bytesDeclared += frame.data.byteLength;
        this.bytesWritten += frame.data.byteLength;
        this.chunks += 1;
        break;
      }
      case 'eof': {
        const file = this.openFile(frame.path, 'eof');
        await file.finish(frame.crc, frame.size);
        this.current = undefined;
        this.filesDone += 1;
        if (!file.toSink) this.options.onFileReceived?.(file.path, resolveImagePath(this.root, file.path));
        break;
      }
      case 'end': {
        if (this.current !== undefined) {
          throw new FerryError(ErrorCode.INVALID_ARGUMENT, `end frame while ${JSON.stringify(this.current.path)} is still open`);
        }
        if (frame.files !== this.filesDone || frame.bytes !== this.bytesWritten) {
          throw new FerryError(
            ErrorCode.TRANSFER_FAILED,
            `sender sent ${frame.files} files / ${frame.bytes} bytes, received ${this.filesDone} / ${this.bytesWritten}`,
          );
        }
        break;
      }
    }
    if (this.finished) return;
    this.expectedSeq += 1;
    const ackFields = { t: 'ack' as const, seq: frame.seq };
    const ack = encode({ v: PROTOCOL_VERSION, ...(this.auth ? this.auth.sign(ackFields) : ackFields) });
    if (this.link !== undefined && this.pumpFd === undefined) this.link.send(ack);
    else this.nc.publish(subjects.xferAck(this.transferId), ack);
    if (frame.t === 'end') this.succeed();
  }

  /**
   * The body of the file just created, from the pumped connection into its fd: exactly its
   * declared size (the pump refuses a frame beyond it), authenticated frame by frame. The idle
   * clock follows the file's offset, so a large body on a slow link is not taken for a dead one.
   */
  private async receiveBody(file: IncomingFile, fileSeq: number): Promise<void> {
    const pump = this.options.filePump!;
    if (fileSeq > MAX_PUMPED_FILE_SEQ) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `file frame ${fileSeq} is beyond the pumped path's ${MAX_PUMPED_FILE_SEQ}`);
    const stopWatching = watchPumpProgress(() => file.position(pump), this.options.idleTimeoutMs, (at) => {
      this.watchdog.touch();
      this.bodyBytes = at;
    });
    const pumping = pump.pump(this.pumpFd!, file.fd, 'open', this.pumpKey!, fileBodyNoncePrefix(fileSeq), {
      signal: this.pumpAbort.signal,
      maxOutBytes: file.isStreamed ? this.streamedBodyBound(file.path) : file.declaredSize,
    });
    this.pumping = pumping.catch(() => undefined);
    let bytes: number;
    try {
      bytes = (await pumping).bytesOut;
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `body of ${JSON.stringify(file.path)}: ${toFerryError(err).message}`, { cause: err });
    } finally {
      stopWatching();
      this.bodyBytes = 0;
    }
    file.recordPumped(bytes);
    if (file.isStreamed) this.bytesDeclared += bytes;
    this.bytesWritten += bytes;
    this.chunks += 1;
  }

  /**
   * What a streamed body may grow to: the per-file limit, within what is left of the image's. The
   * pump refuses a frame beyond it before writing a byte of it, so a lying source fills no disk.
   */
  private streamedBodyBound(path: string): number {
    const room = Math.min(this.options.maxFileBytes, this.options.maxTotalBytes - this.bytesDeclared);
    // 0 would mean "no bound" to the pump.
    if (room < 1) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `image exceeds the limit of ${this.options.maxTotalBytes} bytes at ${JSON.stringify(path)}`);
    return room;
  }

  private checkLimits(path: string, size: number): void {
    const { maxFiles, maxFileBytes, maxTotalBytes } = this.options;
    if (this.filesDeclared + 1 > maxFiles) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `more than ${maxFiles} files`);
    }
    if (size > maxFileBytes) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${JSON.stringify(path)} has ${size} bytes, more than the limit of ${maxFileBytes}`);
    }
    if (this.bytesDeclared + size > maxTotalBytes) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `image exceeds the limit of ${maxTotalBytes} bytes at ${JSON.stringify(path)}`);
    }
  }

  private openFile(path: string, kind: string): IncomingFile {
    if (this.current === undefined || this.current.path !== path) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${kind} frame for ${JSON.stringify(path)}, which is not the open file`);
    }
    return this.current;
  }

  private handleCtl(bytes: Uint8Array): void {
    if (this.finished) return;
    if (this.auth !== undefined) {
      // With a key, only the sender's tagged abort counts: anything else on the subject (a
      // forged abort from another agent, garbage) is ignored rather than failing the transfer.
      let ctl: CtlFrame | undefined;
      try {
        ctl = parseMessage(CtlFrame, decode(bytes));
      } catch {
        ctl = undefined;
      }
      if (ctl === undefined || !this.auth.verify(ctl)) {
        if (this.ignoredControlFrames++ === 0) this.log.warn({ transferId: this.transferId }, 'ignored a ctl frame not authenticated with the migration key');
        return;
      }
      if (ctl.t === 'abort') this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, `sender aborted (${ctl.code}): ${ctl.message}`), { notifySender: false });
      return;
    }
    try {
      const ctl = parseMessage(CtlFrame, decode(bytes));
      // Our own error frames come back to us when sender and receiver share a connection.
      if (ctl.t !== 'abort') return;
      this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, `sender aborted (${ctl.code}): ${ctl.message}`), { notifySender: false });
    } catch (err) {
      this.fail(toFerryError(err, ErrorCode.INVALID_ARGUMENT));
    }
  }

  private failOnSubscription(err: Error): void {
    this.fail(new FerryError(ErrorCode.TRANSFER_FAILED, `subscription failed: ${err.message}`, { cause: err }));
  }

  private stop(): void {
    this.finished = true;
    this.watchdog.stop();
    this.firstFrameWatchdog.stop();
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.queue.length = 0;
    void this.endpoint.then((e) => e?.close());
  }

  private succeed(): void {
    this.stop();
    const stats = {
      files: this.filesDone,
      bytes: this.bytesWritten,
      chunks: this.chunks,
      elapsedMs: performance.now() - this.startedMs,
      transport: this.transport ?? 'nats',
    };
    // Flushes the final ack before closing.
    this.link?.end();
    this.log.info({ transferId: this.transferId, ...stats }, 'image received');
    this.resolveDone(stats);
  }

  private fail(err: FerryError, { notifySender = true } = {}): void {
    if (this.finished) return;
    this.stop();
    // A pump still reading the connection stops first; its fd closes once the pump let go of it.
    this.pumpAbort.abort();
    const link = this.link;
    if (link !== undefined) void (this.pumping ?? Promise.resolve()).then(() => link.destroy());
    this.log.warn({ transferId: this.transferId, code: err.code, err: err.message }, 'image receive failed');
    if (notifySender) {
      try {
        const error = { t: 'error' as const, code: err.code, message: err.message };
        this.nc.publish(subjects.xferCtl(this.transferId), encode({ v: PROTOCOL_VERSION, ...(this.auth ? this.auth.sign(error) : error) }));
      } catch (publishErr) {
        this.log.warn({ transferId: this.transferId, err: publishErr }, 'could not tell the sender that the transfer failed');
      }
    }
    if (!this.draining && this.current !== undefined) {
      const file = this.current;
      this.current = undefined;
      void file.discard();
    }
    this.rejectDone(err);
  }
}
