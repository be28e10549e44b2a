import { createDecipheriv, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';

import { SHUT_WR, createLinuxSyscalls, socketFd, SyscallArgumentError, type SealedPumpCounts } from './index';

const sys = createLinuxSyscalls();
const KEY = randomBytes(32);
const PREFIX_A = Buffer.from('AAAA');
const PREFIX_B = Buffer.from('BBBB');
const FRAME_BYTES = 64 * 1024;
const HEADER_BYTES = 4;
const TAG_BYTES = 16;
const MIB = 1024 * 1024;

const fds: number[] = [];
const sockets: net.Socket[] = [];
const servers: net.Server[] = [];

afterEach(() => {
  // Sockets first: they own the test's ends; then the pumps' ends, whose pumps have all settled.
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) server.close();
  for (const fd of fds.splice(0)) sys.close(fd);
});

/** A fresh socketpair: `fd` for a pump (closed after the test), `socket` (owning the other end) for the test. */
function endpoint(): { fd: number; socket: net.Socket } {
  const [fd, other] = sys.socketpair();
  fds.push(fd);
  const socket = new net.Socket({ fd: other, readable: true, writable: true });
  // A test that makes a pump fail leaves bytes unread; the write then fails once the fd is closed.
  socket.on('error', () => undefined);
  sockets.push(socket);
  return { fd, socket };
}

function pair(): [number, number] {
  const ends = sys.socketpair();
  fds.push(...ends);
  return ends;
}

/** Everything the socket reads until end of stream. */
function collect(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

/** Seals `data` (written as one chunk, or chunk by chunk) and returns the wire bytes. */
async function seal(data: Buffer, frameBytes = FRAME_BYTES): Promise<{ wire: Buffer; counts: SealedPumpCounts }> {
  const input = endpoint();
  const wire = endpoint();
  const wireBytes = collect(wire.socket);
  const pump = sys.sealedPump(input.fd, wire.fd, 'seal', KEY, PREFIX_A, frameBytes);
  input.socket.end(data);
  return { counts: await pump, wire: await wireBytes };
}

/** Feeds `wire` to an opener; returns how it settled and every plaintext byte it wrote. */
async function open(
  wire: Buffer,
  key: Uint8Array = KEY,
  prefix: Uint8Array = PREFIX_A,
  maxOutBytes = 0,
): Promise<{ outcome: PromiseSettledResult<SealedPumpCounts>; output: Buffer }> {
  const input = endpoint();
  const output = endpoint();
  const plaintext = collect(output.socket);
  const pump = sys.sealedPump(input.fd, output.fd, 'open', key, prefix, FRAME_BYTES, { maxOutBytes });
  input.socket.end(wire);
  const [outcome] = await Promise.allSettled([pump]);
  // A failed opener does not shut its output down (shutdownOut is for a clean end): do it here.
  if (outcome.status === 'rejected') sys.shutdown(output.fd, SHUT_WR);
  return { outcome, output: await plaintext };
}

function rejection(outcome: PromiseSettledResult<unknown>): unknown {
  if (outcome.status !== 'rejected') throw new Error('the pump resolved, expected it to reject');
  return outcome.reason;
}

/** The wire's frames: where each starts and the length its header claims. */
function framesOf(wire: Buffer): { offset: number; length: number }[] {
  const frames: { offset: number; length: number }[] = [];
  for (let offset = 0; offset < wire.length; ) {
    const length = wire.readUInt32BE(offset);
    frames.push({ offset, length });
    offset += HEADER_BYTES + length + TAG_BYTES;
  }
  return frames;
}

/** Decodes the wire with node:crypto, from the documented format alone. */
function decodeWithNodeCrypto(wire: Buffer, key: Buffer, prefix: Buffer): Buffer {
  const parts: Buffer[] = [];
  framesOf(wire).forEach(({ offset, length }, index) => {
    const counter = Buffer.alloc(8);
    counter.writeBigUInt64BE(BigInt(index));
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.concat([prefix, counter]));
    decipher.setAAD(Buffer.concat([wire.subarray(offset, offset + HEADER_BYTES), counter]));
    const body = offset + HEADER_BYTES;
    decipher.setAuthTag(wire.subarray(body + length, body + length + TAG_BYTES));
    parts.push(decipher.update(wire.subarray(body, body + length)), decipher.final());
  });
  return Buffer.concat(parts);
}

describe('sealedPump', () => {
  it('round-trips a few MiB byte for byte through seal and open, in the documented wire format', async () => {
    const data = randomBytes(4 * MIB + 12345);
    const input = endpoint();
    const output = endpoint();
    const [w0, w1] = pair();
    const plaintext = collect(output.socket);
    const sealing = sys.sealedPump(input.fd, w0, 'seal', KEY, PREFIX_A, MIB);
    const opening = sys.sealedPump(w1, output.fd, 'open', KEY, PREFIX_A, MIB);
    input.socket.end(data);
    const [sealed, opened] = await Promise.all([sealing, opening]);
    expect((await plaintext).equals(data)).toBe(true);
    expect(sealed.bytesIn).toBe(data.length);
    expect(opened.bytesOut).toBe(data.length);
    expect(opened.bytesIn).toBe(sealed.bytesOut);
    expect(opened.frames).toBe(sealed.frames);
    expect(sealed.bytesOut).toBe(data.length + sealed.frames * (HEADER_BYTES + TAG_BYTES));

    const { wire, counts } = await seal(data.subarray(0, MIB));
    const frames = framesOf(wire);
    expect(frames.length).toBe(counts.frames);
    expect(frames.every((f) => f.length <= FRAME_BYTES)).toBe(true);
    expect(frames[frames.length - 1].length).toBe(0);
    expect(decodeWithNodeCrypto(wire, KEY, PREFIX_A).equals(data.subarray(0, MIB))).toBe(true);
  });

  it('seals an empty stream as the end frame alone', async () => {
    const { wire, counts } = await seal(Buffer.alloc(0));
    expect(counts).toEqual({ bytesIn: 0, bytesOut: HEADER_BYTES + TAG_BYTES, frames: 1 });
    const { outcome, output } = await open(wire);
    expect(outcome).toEqual({ status: 'fulfilled', value: { bytesIn: 20, bytesOut: 0, frames: 1 } });
    expect(output.length).toBe(0);
  });

  it('round-trips many tiny writes', async () => {
    const input = endpoint();
    const wire = endpoint();
    const wireBytes = collect(wire.socket);
    const sealing = sys.sealedPump(input.fd, wire.fd, 'seal', KEY, PREFIX_A, FRAME_BYTES);
    const chunks: Buffer[] = [];
    for (let i = 0; i < 2000; i += 1) {
      const chunk = randomBytes(1 + (i % 97));
      chunks.push(chunk);
      input.socket.write(chunk);
      if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    input.socket.end();
    const sealed = await sealing;
    const data = Buffer.concat(chunks);
    expect(sealed.frames).toBeGreaterThan(2);
    const { outcome, output } = await open(await wireBytes);
    expect(outcome.status).toBe('fulfilled');
    expect(output.equals(data)).toBe(true);
  });

  it('refuses a frame with a flipped byte (EBADMSG) and writes nothing of it', async () => {
    const data = randomBytes(MIB);
    const { wire } = await seal(data);
    const frames = framesOf(wire);
    expect(frames.length).toBeGreaterThan(4);
    const tampered = Buffer.from(wire);
    tampered[frames[2].offset + HEADER_BYTES + 5] ^= 0x01;
    const { outcome, output } = await open(tampered);
    expect(rejection(outcome)).toMatchObject({ code: 'EBADMSG', errno: 74, syscall: 'sealedPump' });
    expect((rejection(outcome) as Error).message).toMatch(/authentication failed on frame 2/);
    expect(output.equals(data.subarray(0, frames[0].length + frames[1].length))).toBe(true);

    // A flipped tag bit, and two frames swapped (each authentic, at the wrong counter).
    const badTag = Buffer.from(wire);
    badTag[frames[1].offset - 1] ^= 0x80;
    expect(rejection((await open(badTag)).outcome)).toMatchObject({ code: 'EBADMSG' });
    const [f0, f1, f2] = frames;
    const swapped = Buffer.concat([wire.subarray(f1.offset, f2.offset), wire.subarray(f0.offset, f1.offset), wire.subarray(f2.offset)]);
    const reordered = await open(swapped);
    expect(rejection(reordered.outcome)).toMatchObject({ code: 'EBADMSG' });
    expect(reordered.output.length).toBe(0);
  });

  it('refuses a wrong key or a wrong nonce prefix (EBADMSG) before writing anything', async () => {
    const { wire } = await seal(randomBytes(200_000));
    const wrongKey = await open(wire, randomBytes(32));
    expect(rejection(wrongKey.outcome)).toMatchObject({ code: 'EBADMSG', syscall: 'sealedPump' });
    expect(wrongKey.output.length).toBe(0);
    const wrongPrefix = await open(wire, KEY, PREFIX_B);
    expect(rejection(wrongPrefix.outcome)).toMatchObject({ code: 'EBADMSG' });
    expect(wrongPrefix.output.length).toBe(0);
  });

  it('reports a stream cut before its end frame, and a forged end frame', async () => {
    const data = randomBytes(300_000);
    const { wire } = await seal(data);
    const end = wire.length - HEADER_BYTES - TAG_BYTES;

    const noEnd = await open(wire.subarray(0, end));
    expect(rejection(noEnd.outcome)).toMatchObject({ code: 'EPIPE', syscall: 'sealedPump' });
    expect((rejection(noEnd.outcome) as Error).message).toMatch(/stream cut: input ended before frame \d+, without the authenticated end frame/);
    // Every frame before the cut was authentic, so all of it was delivered.
    expect(noEnd.output.equals(data)).toBe(true);

    const midFrame = await open(wire.subarray(0, 1000));
    expect((rejection(midFrame.outcome) as Error).message).toMatch(/stream cut: input ended inside frame 0/);
    expect(midFrame.output.length).toBe(0);

    const forged = await open(Buffer.concat([wire.subarray(0, end), Buffer.alloc(HEADER_BYTES + TAG_BYTES)]));
    expect(rejection(forged.outcome)).toMatchObject({ code: 'EBADMSG' });
  });

  it('refuses a length header above frameBytes before reading the frame (EMSGSIZE)', async () => {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(FRAME_BYTES + 1);
    const { outcome, output } = await open(Buffer.concat([header, Buffer.alloc(100)]));
    expect(rejection(outcome)).toMatchObject({ code: 'EMSGSIZE', syscall: 'sealedPump' });
    expect((rejection(outcome) as Error).message).toMatch(/frame 0 claims 65537 bytes, more than frameBytes \(65536\)/);
    header.writeUInt32BE(0xffffffff);
    expect(rejection((await open(header)).outcome)).toMatchObject({ code: 'EMSGSIZE' });
    expect(output.length).toBe(0);
  });

  it('stops a stream that goes past maxOutBytes (EFBIG) before writing the frame that would cross it', async () => {
    const data = randomBytes(3 * FRAME_BYTES);
    const { wire } = await seal(data);
    const exact = await open(wire, KEY, PREFIX_A, data.length);
    expect(exact.outcome.status).toBe('fulfilled');
    expect(exact.output.equals(data)).toBe(true);
    // The sealer frames whatever each read returned, so frames need not be full: the bound is
    // set from the frames this wire actually holds (one byte past the first two).
    const [first, second] = framesOf(wire);
    const inside = first.length + second.length;
    const short = await open(wire, KEY, PREFIX_A, inside + 1);
    expect(rejection(short.outcome)).toMatchObject({ code: 'EFBIG', syscall: 'sealedPump' });
    expect((rejection(short.outcome) as Error).message).toMatch(new RegExp(`past its bound of ${inside + 1} bytes`));
    // The two frames inside the bound went out, nothing of the third.
    expect(short.output.equals(data.subarray(0, inside))).toBe(true);
  });

  it('opens with its two halves overlapped: a slow writer gets every byte in order, a failing one fails the pump (EPIPE) without hanging it', async () => {
    // Many frames, read in bursts while the output is drained slowly: reading and writing overlap.
    const data = randomBytes(6 * MIB + 777);
    const { wire } = await seal(data);
    const input = endpoint();
    const output = endpoint();
    output.socket.pause();
    const chunks: Buffer[] = [];
    output.socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise((resolve) => output.socket.on('end', resolve));
    const pump = sys.sealedPump(input.fd, output.fd, 'open', KEY, PREFIX_A, FRAME_BYTES);
    input.socket.end(wire);
    for (let i = 0; i < 20; i++) {
      output.socket.resume();
      await new Promise((r) => setTimeout(r, 5));
      output.socket.pause();
    }
    output.socket.resume();
    const counts = await pump;
    await ended;
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    expect(counts.bytesOut).toBe(data.length);

    // The writer fails (its reader went away): the pump rejects with the writer's error, not a hang.
    const input2 = endpoint();
    const [out2, reader2] = sys.socketpair();
    fds.push(out2);
    sys.close(reader2);
    const failing = sys.sealedPump(input2.fd, out2, 'open', KEY, PREFIX_A, FRAME_BYTES, { shutdownOut: false });
    input2.socket.end(wire);
    await expect(failing).rejects.toMatchObject({ code: 'EPIPE', message: expect.stringMatching(/writing the plaintext of frame 0/) });
  });

  it('runs a tunnel both ways at once over one socketpair (a prefix per direction)', async () => {
    const [w0, w1] = pair();
    const [aIn, aOut, bIn, bOut] = [endpoint(), endpoint(), endpoint(), endpoint()];
    const toB = randomBytes(3 * MIB);
    const toA = randomBytes(2 * MIB + 7);
    const atB = collect(bOut.socket);
    const atA = collect(aOut.socket);
    const pumps = [
      sys.sealedPump(aIn.fd, w0, 'seal', KEY, PREFIX_A, FRAME_BYTES),
      sys.sealedPump(w1, bOut.fd, 'open', KEY, PREFIX_A, FRAME_BYTES),
      sys.sealedPump(bIn.fd, w1, 'seal', KEY, PREFIX_B, FRAME_BYTES),
      sys.sealedPump(w0, aOut.fd, 'open', KEY, PREFIX_B, FRAME_BYTES),
    ];
    aIn.socket.end(toB);
    bIn.socket.end(toA);
    await Promise.all(pumps);
    expect((await atB).equals(toB)).toBe(true);
    expect((await atA).equals(toA)).toBe(true);
  });

  it('works on Node TCP sockets (non-blocking fds) through socketFd', async () => {
    let accepted: (socket: net.Socket) => void = () => undefined;
    const acceptedSocket = new Promise<net.Socket>((resolve) => (accepted = resolve));
    // pauseOnConnect: Node must not read the accepted socket before the pump owns its fd.
    const server = net.createServer({ pauseOnConnect: true }, accepted);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    sockets.push(client);
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    const peer = await acceptedSocket;
    sockets.push(peer);

    const data = randomBytes(3 * MIB);
    const input = endpoint();
    const output = endpoint();
    const plaintext = collect(output.socket);
    const pumps = [
      sys.sealedPump(input.fd, socketFd(client), 'seal', KEY, PREFIX_A, 256 * 1024),
      sys.sealedPump(socketFd(peer), output.fd, 'open', KEY, PREFIX_A, 256 * 1024),
    ];
    input.socket.end(data);
    await Promise.all(pumps);
    expect((await plaintext).equals(data)).toBe(true);

    const destroyed = new net.Socket();
    destroyed.destroy();
    expect(() => socketFd(destroyed)).toThrow(SyscallArgumentError);

    // A socket Node has already read from (one made from an fd starts reading at once): those
    // bytes would never reach a pump.
    const reader = endpoint();
    fs.writeSync(reader.fd, 'early');
    while (reader.socket.readableLength === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(() => socketFd(reader.socket)).toThrow(/already holds/);
  });

  it('keeps Node off a socket taken from inside its own data handler (Readable would restart the reading)', async () => {
    const [ours, theirs] = sys.socketpair();
    fds.push(ours);
    const socket = new net.Socket({ fd: theirs, readable: true, writable: true });
    socket.on('error', () => undefined);
    sockets.push(socket);
    const output = endpoint();
    const plaintext = collect(output.socket);
    // A greeting read the Node way, then the fd handed over in the same 'data' event.
    const taken = new Promise<number>((resolve) => socket.once('data', () => resolve(socketFd(socket))));
    fs.writeSync(ours, 'hello');
    const fd = await taken;
    await new Promise((resolve) => setImmediate(resolve));
    const data = randomBytes(MIB);
    const { wire } = await seal(data);
    const opening = sys.sealedPump(fd, output.fd, 'open', KEY, PREFIX_A, FRAME_BYTES);
    await new Promise((resolve, reject) => fs.write(ours, wire, (err) => (err ? reject(err) : resolve(undefined))));
    await opening;
    expect((await plaintext).equals(data)).toBe(true);
    expect(socket.readableLength).toBe(0);
  });

  it('stops on its AbortSignal (ECANCELED) without an end frame: the receiver sees a cut stream', async () => {
    const input = endpoint();
    const output = endpoint();
    const [w0, w1] = pair();
    const controller = new AbortController();
    const sealing = sys.sealedPump(input.fd, w0, 'seal', KEY, PREFIX_A, FRAME_BYTES, { signal: controller.signal });
    const opening = sys.sealedPump(w1, output.fd, 'open', KEY, PREFIX_A, FRAME_BYTES);
    const first = new Promise<Buffer>((resolve) => output.socket.once('data', resolve));
    input.socket.write(Buffer.alloc(1000, 7));
    expect((await first).length).toBe(1000);
    controller.abort();
    await expect(sealing).rejects.toMatchObject({ code: 'ECANCELED', errno: 125, syscall: 'sealedPump' });
    // The fds are untouched; the caller ends the wire (here a shutdown stands for its close).
    sys.shutdown(w0, SHUT_WR);
    await expect(opening).rejects.toMatchObject({ code: 'EPIPE', syscall: 'sealedPump' });

    const stopped = new AbortController();
    stopped.abort();
    await expect(sys.sealedPump(input.fd, w0, 'seal', KEY, PREFIX_A, FRAME_BYTES, { signal: stopped.signal })).rejects.toMatchObject({
      code: 'ECANCELED',
    });
  });

  it('stops a tunnel (two pumps on one socket, one signal), and a pump whose input never waits', async () => {
    const [w0] = pair();
    const [local, peerSide] = [endpoint(), endpoint()];
    const controller = new AbortController();
    const { signal } = controller;
    const pumps = [
      sys.sealedPump(local.fd, w0, 'seal', KEY, PREFIX_A, FRAME_BYTES, { signal }),
      sys.sealedPump(w0, peerSide.fd, 'open', KEY, PREFIX_B, FRAME_BYTES, { signal }),
    ];
    setTimeout(() => controller.abort(), 20);
    for (const outcome of await Promise.allSettled(pumps)) expect(rejection(outcome)).toMatchObject({ code: 'ECANCELED' });

    // /dev/zero is always readable, so this pump never waits: it notices between frames.
    const zero = fs.openSync('/dev/zero', 'r');
    const devNull = fs.openSync('/dev/null', 'w');
    fds.push(zero, devNull);
    const endless = new AbortController();
    const pumping = sys.sealedPump(zero, devNull, 'seal', KEY, PREFIX_A, FRAME_BYTES, { shutdownOut: false, signal: endless.signal });
    setTimeout(() => endless.abort(), 50);
    await expect(pumping).rejects.toMatchObject({ code: 'ECANCELED', message: expect.stringMatching(/stopped by its caller after \d+ frames/) });
  });

  it('seals from a regular file (a descriptor that is not a socket)', async () => {
    const dir = fs.mkdtempSync('/tmp/ferry-sealed-pump-');
    try {
      const data = randomBytes(MIB + 3);
      fs.writeFileSync(`${dir}/plain`, data);
      const file = fs.openSync(`${dir}/plain`, 'r');
      fds.push(file);
      const wire = endpoint();
      const wireBytes = collect(wire.socket);
      const sealed = await sys.sealedPump(file, wire.fd, 'seal', KEY, PREFIX_A, FRAME_BYTES);
      // A file is always ready, so every frame but the last is full.
      expect(sealed.frames).toBe(Math.ceil(data.length / FRAME_BYTES) + 1);
      expect((await open(await wireBytes)).output.equals(data)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('checks that outFd is a socket when it must shut it down, before moving any byte', async () => {
    const devNull = fs.openSync('/dev/null', 'w');
    fds.push(devNull);
    const input = endpoint();
    const refused = sys.sealedPump(input.fd, devNull, 'seal', KEY, PREFIX_A, FRAME_BYTES);
    await expect(refused).rejects.toMatchObject({ code: 'ENOTSOCK', syscall: 'shutdown' });
    const pumped = sys.sealedPump(input.fd, devNull, 'seal', KEY, PREFIX_A, FRAME_BYTES, { shutdownOut: false });
    input.socket.end(randomBytes(100_000));
    await expect(pumped).resolves.toMatchObject({ bytesIn: 100_000 });
    await expect(sys.sealedPump(987_654, devNull, 'seal', KEY, PREFIX_A, FRAME_BYTES)).rejects.toMatchObject({
      code: 'EBADF',
      syscall: 'fstat',
    });
  });

  it('refuses bad arguments before starting a pump', async () => {
    const bad: [string, () => Promise<unknown>][] = [
      ['inFd', () => sys.sealedPump(-1, 1, 'seal', KEY, PREFIX_A, FRAME_BYTES)],
      ['outFd', () => sys.sealedPump(0, 1.5, 'seal', KEY, PREFIX_A, FRAME_BYTES)],
      ['mode', () => sys.sealedPump(0, 1, 'both' as 'seal', KEY, PREFIX_A, FRAME_BYTES)],
      ['key', () => sys.sealedPump(0, 1, 'seal', KEY.subarray(0, 31), PREFIX_A, FRAME_BYTES)],
      ['key', () => sys.sealedPump(0, 1, 'seal', 'k'.repeat(32) as unknown as Uint8Array, PREFIX_A, FRAME_BYTES)],
      ['noncePrefix', () => sys.sealedPump(0, 1, 'seal', KEY, Buffer.from('AAAAA'), FRAME_BYTES)],
      ['frameBytes', () => sys.sealedPump(0, 1, 'seal', KEY, PREFIX_A, 4095)],
      ['frameBytes', () => sys.sealedPump(0, 1, 'seal', KEY, PREFIX_A, 16 * MIB + 1)],
      ['frameBytes', () => sys.sealedPump(0, 1, 'seal', KEY, PREFIX_A, 5000.5)],
      ['options.shutdownOut', () => sys.sealedPump(0, 1, 'seal', KEY, PREFIX_A, FRAME_BYTES, { shutdownOut: 'yes' as unknown as boolean })],
    ];
    for (const [argument, call] of bad) {
      const error = await call().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(SyscallArgumentError);
      expect(error).toMatchObject({ syscall: 'sealedPump', argument });
    }
  });
});
