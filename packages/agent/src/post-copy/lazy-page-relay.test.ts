import { Socket } from 'node:net';
import { createLinuxSyscalls } from '@ferry/native';
import { ErrorCode, FerryError, silentLogger } from '@ferry/protocol';
import { decodeIov, encodeIov, PAGE_SERVER_IOV_BYTES, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_GET } from '../criu/criu-page-protocol';
import { LazyPageRelay, type PageFetcher } from './lazy-page-relay';

const PAGE = 4096;

const sys = createLinuxSyscalls();

/**
 * A relay on one end of a socket pair, and a stand-in for CRIU's lazy-pages daemon on the other
 * (as the agent sets them up): the stand-in writes requests and reads whatever comes back.
 */
function relayWithDaemon(fetch: PageFetcher): { relay: LazyPageRelay; d: { sock: Socket; read(n: number): Promise<Buffer> } } {
  const [daemonFd, relayFd] = sys.socketpair();
  const relay = LazyPageRelay.start(fetch, silentLogger, new Socket({ fd: relayFd, readable: true, writable: true }));
  const sock = new Socket({ fd: daemonFd, readable: true, writable: true });
  sock.on('error', () => undefined);
  let buffered = Buffer.alloc(0);
  let waiter: (() => void) | undefined;
  sock.on('data', (c: Buffer) => {
    buffered = Buffer.concat([buffered, c]);
    waiter?.();
  });
  sock.on('close', () => waiter?.());
  return {
    relay,
    d: {
      sock,
      async read(n: number): Promise<Buffer> {
        while (buffered.length < n && !sock.destroyed) await new Promise<void>((r) => (waiter = r));
        const out = buffered.subarray(0, n);
        buffered = buffered.subarray(n);
        return out;
      },
    },
  };
}

const get = (pid: number, vaddr: number, nrPages: number): Buffer => encodeIov({ cmd: PS_IOV_GET, nrPages, vaddr, dstId: pid });

test('answers in the order CRIU asked, even when the source answers out of order, and closes with status 0', async () => {
  const delays = new Map([[0x1000, 50], [0x9000, 0]]);
  const { relay, d } = relayWithDaemon(async (pid, vaddr, nr) => {
    await new Promise((r) => setTimeout(r, delays.get(vaddr) ?? 0));
    // Fewer pages than asked at 0x9000: CRIU copes and asks again.
    const n = vaddr === 0x9000 ? 1 : nr;
    return { vaddr, nr: n, data: Buffer.alloc(n * PAGE, vaddr >> 12) };
  });
  d.sock.write(Buffer.concat([get(1, 0x1000, 2), get(1, 0x9000, 3)]));

  const first = decodeIov(await d.read(PAGE_SERVER_IOV_BYTES));
  expect(first).toEqual({ cmd: (4 << 16) | PS_IOV_ADD_F, nrPages: 2, vaddr: 0x1000, dstId: 1 });
  expect(await d.read(2 * PAGE)).toEqual(Buffer.alloc(2 * PAGE, 1));
  const second = decodeIov(await d.read(PAGE_SERVER_IOV_BYTES));
  expect(second).toMatchObject({ nrPages: 1, vaddr: 0x9000 });
  expect(await d.read(PAGE)).toEqual(Buffer.alloc(PAGE, 9));

  d.sock.write(encodeIov({ cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 }));
  expect(await d.read(4)).toEqual(Buffer.alloc(4));
  await expect(relay.done).resolves.toEqual(expect.objectContaining({ requests: 2, pages: 3 }));
  d.sock.destroy();
});

test('a source that cannot send the pages fails the relay and hangs up on CRIU (the restore then rolls back)', async () => {
  const { relay, d } = relayWithDaemon(async () => {
    throw new FerryError(ErrorCode.UNAVAILABLE, 'source gone');
  });
  d.sock.write(get(1, 0x1000, 1));
  await expect(relay.done).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE, message: 'source gone' });
  expect((await d.read(1)).length).toBe(0);
});

test('a command no lazy-pages daemon sends, or CRIU going away early, fails it', async () => {
  const { relay, d } = relayWithDaemon(async (pid, vaddr, nr) => ({ vaddr, nr, data: Buffer.alloc(nr * PAGE) }));
  d.sock.write(encodeIov({ cmd: 1, nrPages: 1, vaddr: 0x1000, dstId: 1 }));
  await expect(relay.done).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });

  const { relay: early, d: gone } = relayWithDaemon(async (pid, vaddr, nr) => ({ vaddr, nr, data: Buffer.alloc(nr * PAGE) }));
  gone.sock.destroy();
  await expect(early.done).rejects.toMatchObject({ code: ErrorCode.RESTORE_FAILED });
});
