import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, Socket } from 'node:net';
import { createLinuxSyscalls } from '@ferry/native';
import { PageTunnelEndpoint, silentLogger } from '@ferry/protocol';
import { connectPageTunnel, PageTunnelEnd, PageTunnelListener, pageTunnelKeys, pageTunnelToken } from './page-tunnel';

const sys = createLinuxSyscalls();

/** One CRIU's end of its socket pair, driven asynchronously: it writes `data`, ends, and collects what comes back. */
function criuEnd(fd: number, data: Buffer): Promise<Buffer> {
  const socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const failed = new Promise<never>((_, reject) => socket.on('error', reject));
  const written = new Promise<void>((resolve) => socket.end(data, () => resolve()));
  const ended = Promise.race([once(socket, 'end'), failed]);
  return Promise.all([written, ended]).then(() => {
    socket.destroy();
    return Buffer.concat(chunks);
  });
}

test('the two directions derive different keys from the image key, neither equal to it', () => {
  const imageKey = randomBytes(32);
  const { toTarget, toSource } = pageTunnelKeys(imageKey);
  expect(toTarget.equals(toSource)).toBe(false);
  expect(toTarget.equals(imageKey)).toBe(false);
  expect(pageTunnelKeys(imageKey).toTarget.equals(toTarget)).toBe(true);
});

test('the connect token is derived from the image key on both sides and never part of the endpoint the bus carries', async () => {
  const imageKey = randomBytes(32);
  const token = pageTunnelToken(imageKey);
  expect(token).toHaveLength(32);
  expect(pageTunnelToken(imageKey).equals(token)).toBe(true);
  expect(pageTunnelToken(randomBytes(32)).equals(token)).toBe(false);
  const { toTarget, toSource } = pageTunnelKeys(imageKey);
  expect(token.equals(toTarget) || token.equals(toSource) || token.equals(imageKey)).toBe(false);
  const listener = await PageTunnelListener.listen('127.0.0.1', silentLogger, token);
  try {
    // What the receive reply and the checkpoint request carry: no token, and the schema keeps none.
    expect(listener.endpoint).toEqual({ address: '127.0.0.1', port: listener.port });
    expect(PageTunnelEndpoint.parse({ ...listener.endpoint, token })).toEqual(listener.endpoint);
    // Someone who saw the endpoint on the bus, without the migration's key, is refused.
    await expect(connectPageTunnel(listener.endpoint, pageTunnelToken(randomBytes(32)))).rejects.toThrow();
    const good = connectPageTunnel(listener.endpoint, pageTunnelToken(imageKey));
    const accepted = await listener.accepted;
    await PageTunnelListener.acknowledge(accepted);
    (await good).destroy();
    accepted.destroy();
  } finally {
    listener.close();
  }
});

test('pages cross both ways intact between the two CRIU ends, each side counting what it moved', async () => {
  const imageKey = randomBytes(32);
  const listener = await PageTunnelListener.listen('127.0.0.1', silentLogger);
  const sourceSocketP = connectPageTunnel(listener.endpoint, listener.token);
  const targetSocket = await listener.accepted;
  const [targetCriu, targetLocal] = sys.socketpair();
  const targetEnd = PageTunnelEnd.target(sys, targetSocket, targetLocal, imageKey);
  await PageTunnelListener.acknowledge(targetSocket);
  const sourceSocket = await sourceSocketP;
  const [sourceCriu, sourceLocal] = sys.socketpair();
  const sourceEnd = PageTunnelEnd.source(sys, sourceSocket, sourceLocal, imageKey);

  const pages = randomBytes(6 * 1024 * 1024 + 123);
  const reply = randomBytes(4);
  // "criu dump" writes its pages and ends; "criu page-server" answers and ends; each reads what the other sent.
  const [atSource, atTarget] = await Promise.all([criuEnd(sourceCriu, pages), criuEnd(targetCriu, reply)]);
  expect(atTarget.equals(pages)).toBe(true);
  expect(atSource.equals(reply)).toBe(true);
  expect(await sourceEnd.done).toMatchObject({ sent: pages.length, received: reply.length });
  expect(await targetEnd.done).toMatchObject({ sent: reply.length, received: pages.length });
});

test('a connection without the token is refused and does not take the place of the real source', async () => {
  const listener = await PageTunnelListener.listen('127.0.0.1', silentLogger);
  const intruder = connect({ host: '127.0.0.1', port: listener.port });
  await once(intruder, 'connect');
  intruder.write(randomBytes(32));
  await once(intruder, 'close');
  await expect(connectPageTunnel(listener.endpoint, randomBytes(32))).rejects.toThrow();
  const good = connectPageTunnel(listener.endpoint, listener.token);
  const accepted = await listener.accepted;
  await PageTunnelListener.acknowledge(accepted);
  const socket = await good;
  socket.destroy();
  accepted.destroy();
});

test('a byte changed on the wire fails the tunnel (authentication), and nothing of the forged frame reaches CRIU', async () => {
  const imageKey = randomBytes(32);
  // A man in the middle between the two agents, flipping one byte of the sealed stream.
  const listener = await PageTunnelListener.listen('127.0.0.1', silentLogger);
  const relay = createServer((down) => {
    const up = connect({ host: '127.0.0.1', port: listener.port });
    let seen = 0;
    down.on('data', (chunk: Buffer) => {
      if (seen < 100_000 && seen + chunk.length > 100_000) chunk[100_000 - seen] ^= 0xff;
      seen += chunk.length;
      up.write(chunk);
    });
    up.pipe(down);
    up.on('error', () => undefined);
    down.on('error', () => undefined);
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
  const relayPort = (relay.address() as { port: number }).port;
  const sourceSocketP = connectPageTunnel({ ...listener.endpoint, port: relayPort }, listener.token);
  const targetSocket = await listener.accepted;
  const [targetCriu, targetLocal] = sys.socketpair();
  const targetEnd = PageTunnelEnd.target(sys, targetSocket, targetLocal, imageKey);
  await PageTunnelListener.acknowledge(targetSocket);
  const [sourceCriu, sourceLocal] = sys.socketpair();
  const sourceEnd = PageTunnelEnd.source(sys, await sourceSocketP, sourceLocal, imageKey);
  void criuEnd(sourceCriu, randomBytes(4 * 1024 * 1024)).catch(() => undefined);
  const received = criuEnd(targetCriu, Buffer.alloc(0)).catch(() => Buffer.alloc(0));
  await expect(targetEnd.done).rejects.toMatchObject({ code: 'TRANSFER_FAILED', message: expect.stringMatching(/EBADMSG|authentic/i) });
  await sourceEnd.done.catch(() => undefined);
  // Frames before the forged one arrived, nothing from it on.
  expect((await received).length).toBeLessThan(100_000);
  relay.close();
});

test('a stopped tunnel ends both directions without an end frame: the far side sees a cut stream', async () => {
  const imageKey = randomBytes(32);
  const { listener, source, target } = await (async () => {
    const l = await PageTunnelListener.listen('127.0.0.1', silentLogger);
    const s = connectPageTunnel(l.endpoint, l.token);
    const t = await l.accepted;
    return { listener: l, source: s, target: t };
  })();
  const [targetCriu, targetLocal] = sys.socketpair();
  const targetEnd = PageTunnelEnd.target(sys, target, targetLocal, imageKey);
  await PageTunnelListener.acknowledge(target);
  const [sourceCriu, sourceLocal] = sys.socketpair();
  const sourceEnd = PageTunnelEnd.source(sys, await source, sourceLocal, imageKey);
  sourceEnd.stop();
  await expect(sourceEnd.done).rejects.toMatchObject({ code: 'TRANSFER_FAILED' });
  await expect(targetEnd.done).rejects.toMatchObject({ code: 'TRANSFER_FAILED' });
  listener.close();
  sys.close(sourceCriu);
  sys.close(targetCriu);
});

