import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { createLinuxSyscalls, packPageRelayRuns, PAGE_DELTA_PAGE_BYTES as PAGE, SyscallArgumentError, type LazyServeProtocol, type PageRelayOptions, type PageRelayRun } from './index';

const sys = createLinuxSyscalls();
// CRIU's page-server numbers (the agent's criu-page-protocol.ts): PS_IOV_GET, PS_IOV_ADD_F | PE_PRESENT << 16, PS_IOV_CLOSE.
const PROTOCOL: LazyServeProtocol = { cmdMask: 0xffff, getCmd: 7, replyCmd: (4 << 16) | 6, closeCmd: 0x1023, forceCloseCmd: 0x1024 };
const OPTIONS: PageRelayOptions = { chunkPages: 4, window: 3, cacheBytes: 64 * PAGE, waitForBackground: true };
const fds: number[] = [];
const sockets: net.Socket[] = [];

afterEach(() => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const fd of fds.splice(0)) sys.close(fd);
});

interface Iov {
  cmd: number;
  nr: number;
  vaddr: number;
  task: number;
}
const encode = ({ cmd, nr, vaddr, task }: Iov): Buffer => {
  const iov = Buffer.alloc(32);
  iov.writeUInt32LE(cmd, 0);
  iov.writeBigUInt64LE(BigInt(nr), 8);
  iov.writeBigUInt64LE(BigInt(vaddr), 16);
  iov.writeBigUInt64LE(BigInt(task), 24);
  return iov;
};
const decode = (b: Buffer): Iov => ({ cmd: b.readUInt32LE(0), nr: Number(b.readBigUInt64LE(8)), vaddr: Number(b.readBigUInt64LE(16)), task: Number(b.readBigUInt64LE(24)) });

/** One end of a socket pair for the relay, the other as a Node socket with a byte reader. */
function peer(): { fd: number; socket: net.Socket; read(bytes: number): Promise<Buffer> } {
  const [fd, other] = sys.socketpair();
  fds.push(fd);
  const socket = new net.Socket({ fd: other, readable: true, writable: true });
  socket.on('error', () => undefined);
  sockets.push(socket);
  let buffered = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    wake?.();
  });
  return {
    fd,
    socket,
    async read(bytes) {
      while (buffered.length < bytes) await new Promise<void>((resolve) => (wake = resolve));
      const out = buffered.subarray(0, bytes);
      buffered = buffered.subarray(bytes);
      return out;
    },
  };
}

/** Page p of task t's memory: filled with a byte of (t, p). */
const page = (task: number, vaddr: number): Buffer => Buffer.alloc(PAGE, (task * 31 + vaddr / PAGE) & 0xff);
const pages = (task: number, vaddr: number, nr: number): Buffer => Buffer.concat(Array.from({ length: nr }, (_, i) => page(task, vaddr + i * PAGE)));

/**
 * The source's page server as CRIU's lazy dump is one: answers requests in order, at most
 * `maxAnswer` pages each (a page pipe's run may end first), a 4-byte status to the close.
 */
function source(opts: { maxAnswer?: number; hold?: boolean; delayMs?: number; answer?: (req: Iov) => Buffer } = {}) {
  const p = peer();
  const requests: Iov[] = [];
  let closed = false;
  void (async () => {
    for (;;) {
      const req = decode(await p.read(32));
      requests.push(req);
      if (req.cmd === PROTOCOL.closeCmd) {
        closed = true;
        p.socket.write(Buffer.alloc(4));
        return;
      }
      if (opts.hold) continue;
      if (opts.delayMs) await sleep(opts.delayMs);
      if (opts.answer) {
        p.socket.write(opts.answer(req));
        continue;
      }
      const nr = Math.min(req.nr, opts.maxAnswer ?? req.nr);
      p.socket.write(Buffer.concat([encode({ cmd: PROTOCOL.replyCmd, nr, vaddr: req.vaddr, task: req.task }), pages(req.task, req.vaddr, nr)]));
    }
  })().catch(() => undefined);
  return { fd: p.fd, requests, socket: p.socket, closed: () => closed };
}

/** CRIU's daemon: asks, and reads the answer to each (header and pages). */
function daemon() {
  const p = peer();
  return {
    fd: p.fd,
    socket: p.socket,
    ask: (req: Omit<Iov, 'cmd'>) => p.socket.write(encode({ cmd: PROTOCOL.getCmd, ...req })),
    close: () => p.socket.write(encode({ cmd: PROTOCOL.closeCmd, nr: 0, vaddr: 0, task: 0 })),
    async answer(): Promise<{ head: Iov; data: Buffer }> {
      const head = decode(await p.read(32));
      return { head, data: await p.read(head.nr * PAGE) };
    },
    status: () => p.read(4),
  };
}

const RUNS: PageRelayRun[] = [
  { task: 5, vaddr: 0x10000, pages: 10 },
  { task: 5, vaddr: 0x40000, pages: 6 },
  { task: 9, vaddr: 0x10000, pages: 5 },
];

/** Asks for every page of `runs` as the daemon's background does (runs of at most `xfer` pages, in order), checking each answer. */
async function pullAll(d: ReturnType<typeof daemon>, runs: PageRelayRun[], xfer: number): Promise<void> {
  for (const run of runs) {
    let done = 0;
    while (done < run.pages) {
      const vaddr = run.vaddr + done * PAGE;
      d.ask({ nr: Math.min(xfer, run.pages - done), vaddr, task: run.task });
      const { head, data } = await d.answer();
      expect(head).toEqual({ cmd: PROTOCOL.replyCmd, nr: head.nr, vaddr, task: run.task });
      expect(head.nr).toBeGreaterThan(0);
      expect(data.equals(pages(run.task, vaddr, head.nr))).toBe(true);
      done += head.nr;
    }
  }
}

test('the daemon gets every page it asks for, most of them fetched ahead; the close goes to the source and its status back', async () => {
  const s = source();
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  // A fault first (one page, mid-run), then the background transfer in address order.
  d.ask({ nr: 1, vaddr: 0x10000 + 7 * PAGE, task: 5 });
  const fault = await d.answer();
  expect(fault.data.equals(page(5, 0x10000 + 7 * PAGE))).toBe(true);
  await pullAll(d, [{ task: 5, vaddr: 0x10000, pages: 7 }, { task: 5, vaddr: 0x10000 + 8 * PAGE, pages: 2 }, RUNS[1]!, RUNS[2]!], 2);
  d.close();
  expect((await d.status()).equals(Buffer.alloc(4))).toBe(true);
  const result = await relaying;
  expect(result.pages).toBe(21);
  expect(result.hits).toBeGreaterThan(0);
  expect(result.unusedPages).toBe(0);
  expect(s.closed()).toBe(true);
  // No page was asked of the source twice.
  const asked = s.requests.filter((r) => r.cmd === PROTOCOL.getCmd).flatMap((r) => Array.from({ length: r.nr }, (_, i) => `${r.task}:${r.vaddr + i * PAGE}`));
  expect(new Set(asked).size).toBe(asked.length);
  expect(asked.length).toBe(21);
});

test('answers go in the order the daemon asked, whichever is ready first (it reads each into its oldest request)', async () => {
  const s = source({ delayMs: 20 });
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  d.ask({ nr: 2, vaddr: 0x10000, task: 5 });
  await d.answer();
  await sleep(200); // the fetches ahead of task 5 are in
  // A page of task 9 nothing fetched (passed on, slow), then task 5's next run (fetched already).
  d.ask({ nr: 1, vaddr: 0x90000, task: 9 });
  d.ask({ nr: 2, vaddr: 0x10000 + 2 * PAGE, task: 5 });
  const first = await d.answer();
  const second = await d.answer();
  expect([first.head.task, first.head.vaddr]).toEqual([9, 0x90000]);
  expect(first.data.equals(page(9, 0x90000))).toBe(true);
  expect([second.head.task, second.head.vaddr, second.head.nr]).toEqual([5, 0x10000 + 2 * PAGE, 2]);
  expect(second.data.equals(pages(5, 0x10000 + 2 * PAGE, 2))).toBe(true);
  d.close();
  await d.status();
  await expect(relaying).resolves.toMatchObject({ requests: 3, hits: 1 });
});

test('nothing is fetched ahead while the daemon only faults (the restore may still run)', async () => {
  const s = source();
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  d.ask({ nr: 1, vaddr: 0x40000, task: 5 });
  await d.answer();
  await sleep(50);
  expect(s.requests).toEqual([{ cmd: PROTOCOL.getCmd, nr: 1, vaddr: 0x40000, task: 5 }]);
  d.close();
  await d.status();
  await expect(relaying).resolves.toMatchObject({ requests: 1, hits: 0, prefetchedPages: 0 });
});

test('at most `window` fetches ahead are in flight, and the cache bound holds them back', async () => {
  const s = source({ hold: true });
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, window: 2 });
  relaying.catch(() => undefined);
  d.ask({ nr: 2, vaddr: 0x10000, task: 5 });
  await sleep(100);
  // The request passed on, then two chunks of 4 pages after it.
  expect(s.requests).toEqual([
    { cmd: PROTOCOL.getCmd, nr: 2, vaddr: 0x10000, task: 5 },
    { cmd: PROTOCOL.getCmd, nr: 4, vaddr: 0x10000 + 2 * PAGE, task: 5 },
    { cmd: PROTOCOL.getCmd, nr: 4, vaddr: 0x10000 + 6 * PAGE, task: 5 },
  ]);
  s.socket.destroy();
  await expect(relaying).rejects.toMatchObject({ code: 'EPIPE' });

  const s2 = source({ hold: true });
  const d2 = daemon();
  const bounded = sys.pageRelay(d2.fd, s2.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, window: 8, cacheBytes: 5 * PAGE });
  bounded.catch(() => undefined);
  d2.ask({ nr: 2, vaddr: 0x10000, task: 5 });
  await sleep(100);
  expect(s2.requests).toHaveLength(2);
  s2.socket.destroy();
  await expect(bounded).rejects.toMatchObject({ code: 'EPIPE' });
});

test('short answers (a page pipe run ending first) leave nothing out: the rest is asked again', async () => {
  const s = source({ maxAnswer: 3 });
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, chunkPages: 5 });
  await pullAll(d, RUNS, 4);
  d.close();
  await d.status();
  await expect(relaying).resolves.toMatchObject({ pages: 21, unusedPages: 0 });
});

test('a page asked again (a forked child has the same lazy memory) is passed on and answered', async () => {
  const s = source();
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  await pullAll(d, [RUNS[2]!], 5);
  await pullAll(d, [RUNS[2]!], 5);
  d.close();
  await d.status();
  await expect(relaying).resolves.toMatchObject({ pages: 10 });
});

test('pages fetched ahead that the daemon never takes are dropped at the close and counted', async () => {
  const s = source();
  const d = daemon();
  const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  await pullAll(d, [{ task: 5, vaddr: 0x10000, pages: 2 }], 2);
  await sleep(50);
  d.close();
  expect((await d.status()).equals(Buffer.alloc(4))).toBe(true);
  const result = await relaying;
  expect(result.unusedPages).toBeGreaterThan(0);
  expect(result.unusedPages).toBe(result.prefetchedPages);
});

describe('a source that answers other than asked fails the relay (EPROTO), the daemon gets nothing from it', () => {
  test.each([
    ['other pages', (req: Iov) => Buffer.concat([encode({ cmd: PROTOCOL.replyCmd, nr: req.nr, vaddr: req.vaddr + PAGE, task: req.task }), pages(req.task, req.vaddr + PAGE, req.nr)])],
    ['another task', (req: Iov) => Buffer.concat([encode({ cmd: PROTOCOL.replyCmd, nr: req.nr, vaddr: req.vaddr, task: req.task + 1 }), pages(req.task, req.vaddr, req.nr)])],
    ['more pages than asked', (req: Iov) => Buffer.concat([encode({ cmd: PROTOCOL.replyCmd, nr: req.nr + 1, vaddr: req.vaddr, task: req.task }), pages(req.task, req.vaddr, req.nr + 1)])],
    ['no pages', (req: Iov) => encode({ cmd: PROTOCOL.replyCmd, nr: 0, vaddr: req.vaddr, task: req.task })],
    ['another command', (req: Iov) => encode({ cmd: 1, nr: req.nr, vaddr: req.vaddr, task: req.task })],
  ])('%s', async (_name, answer) => {
    const s = source({ answer });
    const d = daemon();
    const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
    d.ask({ nr: 1, vaddr: 0x10000, task: 5 });
    await expect(relaying).rejects.toMatchObject({ code: 'EPROTO', syscall: 'pageRelay' });
  });

  test('bytes nobody asked for', async () => {
    const s = source();
    const d = daemon();
    const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
    s.socket.write(Buffer.concat([encode({ cmd: PROTOCOL.replyCmd, nr: 1, vaddr: 0x10000, task: 5 }), page(5, 0x10000)]));
    await expect(relaying).rejects.toMatchObject({ code: 'EPROTO' });
  });
});

test('a daemon that goes away, a source that goes away, and a stop each end it with why', async () => {
  const s1 = source();
  const d1 = daemon();
  const r1 = sys.pageRelay(d1.fd, s1.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  d1.socket.destroy();
  await expect(r1).rejects.toMatchObject({ code: 'EPIPE', message: expect.stringMatching(/daemon went away/) });

  const s2 = source();
  const d2 = daemon();
  const r2 = sys.pageRelay(d2.fd, s2.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
  s2.socket.destroy();
  await expect(r2).rejects.toMatchObject({ code: 'EPIPE', message: expect.stringMatching(/source's page server went away/) });

  const s3 = source();
  const d3 = daemon();
  const stop = new AbortController();
  const r3 = sys.pageRelay(d3.fd, s3.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, signal: stop.signal });
  stop.abort();
  await expect(r3).rejects.toMatchObject({ code: 'ECANCELED' });
});

test('a daemon asking for what no daemon asks (a command, an unaligned address, 2^16 pages and more) fails it', async () => {
  for (const req of [
    { cmd: 3, nr: 1, vaddr: 0x10000, task: 5 },
    { cmd: PROTOCOL.getCmd, nr: 1, vaddr: 0x10001, task: 5 },
    { cmd: PROTOCOL.getCmd, nr: 2 ** 16 + 1, vaddr: 0x10000, task: 5 },
  ]) {
    const s = source();
    const d = daemon();
    const relaying = sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, OPTIONS);
    d.socket.write(encode(req));
    await expect(relaying).rejects.toMatchObject({ code: 'EPROTO' });
    expect(s.requests).toEqual([]);
  }
});

test('plans and options are checked before any thread starts', async () => {
  const s = source();
  const d = daemon();
  const overlapping = packPageRelayRuns([
    { task: 5, vaddr: 0x10000, pages: 4 },
    { task: 5, vaddr: 0x12000, pages: 1 },
  ]);
  await expect(sys.pageRelay(d.fd, s.fd, overlapping, PROTOCOL, OPTIONS)).rejects.toThrow(/sorted by \(task, vaddr\) and not overlapping/);
  await expect(sys.pageRelay(d.fd, s.fd, packPageRelayRuns([{ task: 1, vaddr: 0, pages: 2 ** 22 + 1 }]), PROTOCOL, OPTIONS)).rejects.toThrow(/pages in all/);
  await expect(sys.pageRelay(d.fd, s.fd, new Uint8Array(25), PROTOCOL, OPTIONS)).rejects.toBeInstanceOf(SyscallArgumentError);
  await expect(sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, chunkPages: 0 })).rejects.toBeInstanceOf(SyscallArgumentError);
  await expect(sys.pageRelay(d.fd, s.fd, packPageRelayRuns(RUNS), PROTOCOL, { ...OPTIONS, cacheBytes: 2 ** 31 })).rejects.toBeInstanceOf(SyscallArgumentError);
  expect(() => packPageRelayRuns([{ task: -1, vaddr: 0, pages: 1 }])).toThrow(SyscallArgumentError);
});
