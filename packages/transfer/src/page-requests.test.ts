/** Post-copy page requests against a real nats-server: source and target on their own connections. */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { encode, ErrorCode, FerryError, PAGE_BYTES, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { pageRequestKey, requestPages, servePageRequests } from './page-requests';
import { startTestNatsServer, type TestNatsServer } from './test-nats-server';

jest.setTimeout(30_000);

let server: TestNatsServer;
let source: NatsConnection;
let target: NatsConnection;

beforeAll(async () => {
  server = await startTestNatsServer();
  source = await connect({ servers: server.url });
  target = await connect({ servers: server.url });
});
afterAll(async () => {
  await source?.close();
  await target?.close();
  await server?.stop();
});

/** Pages whose bytes are their page number (mod 256); runs end every 8 pages. */
const lookup = async (pid: number, vaddr: number, nr: number) => {
  if (pid !== 1) throw new FerryError(ErrorCode.NOT_FOUND, `no task ${pid}`);
  const first = vaddr / PAGE_BYTES;
  const n = Math.min(nr, 8 - (first % 8));
  const data = Buffer.alloc(n * PAGE_BYTES);
  for (let i = 0; i < n; i++) data.fill((first + i) % 256, i * PAGE_BYTES, (i + 1) * PAGE_BYTES);
  return { vaddr, nr: n, data };
};

test('sealed pages arrive intact, cut at the end of the source\'s run', async () => {
  const key = randomBytes(32);
  const responder = servePageRequests(source, 'x-pages-1', lookup, { imageKey: key });
  // The subscription reaches the server before the other connection asks.
  await source.flush();
  try {
    const run = await requestPages(target, 'x-pages-1', { pid: 1, vaddr: 6 * PAGE_BYTES, nr: 5 }, { key: pageRequestKey(key) });
    expect(run).toMatchObject({ vaddr: 6 * PAGE_BYTES, nr: 2 });
    expect([run.data[0], run.data[PAGE_BYTES]]).toEqual([6, 7]);
    expect(responder.stats()).toEqual({ requests: 1, bytes: 2 * PAGE_BYTES });
  } finally {
    responder.close();
  }
});

test('the source\'s refusal comes back with its code; a reply under another key does not open', async () => {
  const responder = servePageRequests(source, 'x-pages-2', lookup, { imageKey: randomBytes(32) });
  await source.flush();
  try {
    await expect(requestPages(target, 'x-pages-2', { pid: 9, vaddr: 0, nr: 1 }, { imageKey: randomBytes(32) })).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
    await expect(requestPages(target, 'x-pages-2', { pid: 1, vaddr: 0, nr: 1 }, { imageKey: randomBytes(32) })).rejects.toMatchObject({
      code: ErrorCode.TRANSFER_FAILED,
      message: expect.stringContaining('failed authentication'),
    });
    // Garbage on the subject gets an error reply, not a crash.
    const reply = await target.request(subjects.xferPages('x-pages-2'), encode({ v: PROTOCOL_VERSION, t: 'get', pid: -1 }));
    expect(reply.data.byteLength).toBeGreaterThan(0);
  } finally {
    responder.close();
  }
});

test('no source answering is UNAVAILABLE or DEADLINE_EXCEEDED, quickly', async () => {
  await expect(requestPages(target, 'x-pages-none', { pid: 1, vaddr: 0, nr: 1 }, { timeoutMs: 300 })).rejects.toMatchObject({
    code: expect.stringMatching(/UNAVAILABLE|DEADLINE_EXCEEDED/),
  });
});
