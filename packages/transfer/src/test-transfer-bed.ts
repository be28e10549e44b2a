/**
 * Test support (not exported from the package) for the image-transfer tests: a real nats-server
 * per test file, sender and receiver on separate connections as two agents would be, fresh
 * source/target directories per transfer, and raw frames for playing a (possibly hostile) sender.
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { connect, type NatsConnection } from 'nats';
import { decode, encode, FerryError, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { startTestNatsServer, type TestNatsServer } from './test-nats-server';

export const MIB = 1024 * 1024;

export class TransferTestBed {
  server!: TestNatsServer;
  senderNc!: NatsConnection;
  receiverNc!: NatsConnection;
  scratch!: string;
  private transfers = 0;

  /** A bed set up before the file's tests and torn down after them. */
  static install(): TransferTestBed {
    const bed = new TransferTestBed();
    beforeAll(() => bed.start());
    afterAll(() => bed.stop());
    return bed;
  }

  private async start(): Promise<void> {
    this.server = await startTestNatsServer();
    this.senderNc = await connect({ servers: this.server.url });
    this.receiverNc = await connect({ servers: this.server.url });
    this.scratch = await mkdtemp(join(tmpdir(), 'ferry-transfer-test-'));
  }

  private async stop(): Promise<void> {
    await this.senderNc?.close();
    await this.receiverNc?.close();
    await this.server?.stop();
    if (this.scratch) await rm(this.scratch, { recursive: true, force: true });
  }

  /** A fresh transfer id and fresh source/target dirs (0700, as the agent makes them). */
  async freshTransfer(): Promise<{ id: string; src: string; dst: string; parent: string }> {
    this.transfers += 1;
    const parent = join(this.scratch, `t${this.transfers}`);
    const src = join(parent, 'src');
    const dst = join(parent, 'dst');
    await mkdir(src, { recursive: true, mode: 0o700 });
    await mkdir(dst, { recursive: true, mode: 0o700 });
    return { id: `xfer-${this.transfers}-${process.pid}`, src, dst, parent };
  }

  /** Collects the frames published on a transfer's ctl subject. */
  watchCtl(id: string): { frames: Array<Record<string, unknown>>; stop: () => void } {
    const frames: Array<Record<string, unknown>> = [];
    const sub = this.senderNc.subscribe(subjects.xferCtl(id), {
      callback: (_err, msg) => frames.push(decode(msg.data) as Record<string, unknown>),
    });
    return { frames, stop: () => sub.unsubscribe() };
  }

  /** Counts the frames that go through nats-server on a transfer's data subject. */
  watchData(id: string): { count: () => number; stop: () => void } {
    let n = 0;
    const sub = this.senderNc.subscribe(subjects.xferData(id), { callback: () => void (n += 1) });
    return { count: () => n, stop: () => sub.unsubscribe() };
  }

  /** Publishes raw frames on the data subject, as a (possibly hostile) sender would. */
  async publishRaw(id: string, frames: unknown[]): Promise<void> {
    for (const f of frames) this.senderNc.publish(subjects.xferData(id), f instanceof Uint8Array ? f : encode(f));
    await this.senderNc.flush();
  }
}

export async function rejection(promise: Promise<unknown>): Promise<FerryError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    return err as FerryError;
  }
  throw new Error('expected a rejection');
}

const v = PROTOCOL_VERSION;
export const fileFrame = (seq: number, path: string, size: number) => ({ v, t: 'file', seq, path, mode: 0o600, size });
export const chunkFrame = (seq: number, path: string, offset: number, data: Buffer, crc = crc32(data)) => ({ v, t: 'chunk', seq, path, offset, data, crc });

export async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map(String).sort();
}
