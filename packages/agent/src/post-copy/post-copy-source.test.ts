import { createServer, type Server, type Socket } from 'node:net';
import { ErrorCode } from '@ferry/protocol';
import { decodeIov, encodeIov, PAGE_SERVER_IOV_BYTES, PS_IOV_ADD_F } from '../criu/criu-page-protocol';
import { CriuPageClient } from './post-copy-source';

jest.setTimeout(10_000);
const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A stand-in for `criu dump --lazy-pages`'s page server: `answer` gets each request's header. */
async function fakeCriu(answer: (sock: Socket, req: Buffer) => void): Promise<{ server: Server; port: number }> {
  const server = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= PAGE_SERVER_IOV_BYTES) {
        answer(sock, buf.subarray(0, PAGE_SERVER_IOV_BYTES));
        buf = buf.subarray(PAGE_SERVER_IOV_BYTES);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  servers.push(server);
  return { server, port: (server.address() as { port: number }).port };
}

test('pipelined requests get their replies in order, the pages split across reads joined', async () => {
  // Replies go out in order, each in two writes a few ms apart, so they cross reads.
  let previous = Promise.resolve();
  const { port } = await fakeCriu((sock, req) => {
    const iov = decodeIov(req);
    const reply = Buffer.concat([encodeIov({ ...iov, cmd: (4 << 16) | PS_IOV_ADD_F }), Buffer.alloc(iov.nrPages * 4096, iov.vaddr >> 12)]);
    previous = previous.then(async () => {
      sock.write(reply.subarray(0, 100));
      await new Promise((r) => setTimeout(r, 5));
      sock.write(reply.subarray(100));
    });
  });
  const client = await CriuPageClient.connect('127.0.0.1', port);
  const [a, b] = await Promise.all([client.get(1, 0x1000, 2), client.get(1, 0x5000, 1)]);
  expect(a).toMatchObject({ vaddr: 0x1000, nr: 2 });
  expect(a.data).toEqual(Buffer.alloc(2 * 4096, 1));
  expect(b.data).toEqual(Buffer.alloc(4096, 5));
  await client.close().catch(() => undefined);
});

test('a reply header out of range fails the request instead of throwing in the socket handler', async () => {
  const { port } = await fakeCriu((sock) => {
    const bad = Buffer.alloc(PAGE_SERVER_IOV_BYTES);
    bad.writeBigUInt64LE(BigInt(2) ** BigInt(60), 8);
    sock.write(bad);
  });
  const client = await CriuPageClient.connect('127.0.0.1', port);
  await expect(client.get(1, 0x1000, 1)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
});
