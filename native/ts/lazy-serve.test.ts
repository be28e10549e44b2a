import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';

import { createLinuxSyscalls, packLazyServeRuns, PAGE_DELTA_PAGE_BYTES as PAGE, SyscallArgumentError, type LazyServeProtocol } from './index';

const sys = createLinuxSyscalls();
// CRIU's page-server numbers (the agent's criu-page-protocol.ts): PS_IOV_GET, PS_IOV_ADD_F | PE_PRESENT << 16, PS_IOV_CLOSE.
const PROTOCOL: LazyServeProtocol = { cmdMask: 0xffff, getCmd: 7, replyCmd: (4 << 16) | 6, closeCmd: 0x1023, forceCloseCmd: 0x1024 };
const fds: number[] = [];
const sockets: net.Socket[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const fd of fds.splice(0)) sys.close(fd);
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A file of `pages` pages, page i filled with byte (seed + i). */
function pagesFile(pages: number, seed: number): number {
  const dir = fs.mkdtempSync('/tmp/ferry-lazy-serve-');
  dirs.push(dir);
  fs.writeFileSync(`${dir}/pages`, Buffer.concat(Array.from({ length: pages }, (_, i) => Buffer.alloc(PAGE, (seed + i) & 0xff))));
  const fd = fs.openSync(`${dir}/pages`, 'r');
  fds.push(fd);
  return fd;
}

/** The daemon's side of the socket pair: sends requests, reads replies in order. */
function daemon(): { fd: number; ask(cmd: number, nr: number, vaddr: number, task: number): void; read(bytes: number): Promise<Buffer> } {
  const [fd, other] = sys.socketpair();
  fds.push(fd);
  const socket = new net.Socket({ fd: other, readable: true, writable: true });
  socket.on('error', () => undefined);
  sockets.push(socket);
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (buffered = Buffer.concat([buffered, chunk])));
  return {
    fd,
    ask(cmd, nr, vaddr, task) {
      const iov = Buffer.alloc(32);
      iov.writeUInt32LE(cmd, 0);
      iov.writeBigUInt64LE(BigInt(nr), 8);
      iov.writeBigUInt64LE(BigInt(vaddr), 16);
      iov.writeBigUInt64LE(BigInt(task), 24);
      socket.write(iov);
    },
    async read(bytes) {
      while (buffered.length < bytes) await once(socket, 'data');
      const out = buffered.subarray(0, bytes);
      buffered = buffered.subarray(bytes);
      return out;
    },
  };
}

const header = (reply: Buffer) => ({ cmd: reply.readUInt32LE(0), nr: Number(reply.readBigUInt64LE(8)), vaddr: Number(reply.readBigUInt64LE(16)), task: Number(reply.readBigUInt64LE(24)) });

test('answers each request from the run holding it, as many pages as that run has from there, in order, until the close', async () => {
  const a = pagesFile(8, 10);
  const b = pagesFile(4, 100);
  // Task 5: 3 pages at 0x10000 from file a's page 2; task 5: 2 pages at 0x20000 from b's page 1; task 9: 1 page at 0x10000 from b's page 3.
  const runs = packLazyServeRuns([
    { task: 5, vaddr: 0x10000, pages: 3, file: 0, offset: 2 * PAGE },
    { task: 5, vaddr: 0x20000, pages: 2, file: 1, offset: 1 * PAGE },
    { task: 9, vaddr: 0x10000, pages: 1, file: 1, offset: 3 * PAGE },
  ]);
  const d = daemon();
  const serving = sys.lazyServe(d.fd, runs, [a, b], PROTOCOL);
  // With a flag bit above the command (CRIU sets PS_IOV_FLAG_*): still a request.
  d.ask(7 | (1 << 16), 8, 0x11000, 5);
  const first = await d.read(32);
  expect(header(first)).toEqual({ cmd: PROTOCOL.replyCmd, nr: 2, vaddr: 0x11000, task: 5 });
  const data = await d.read(2 * PAGE);
  expect(data.subarray(0, PAGE)).toEqual(Buffer.alloc(PAGE, 13));
  expect(data.subarray(PAGE)).toEqual(Buffer.alloc(PAGE, 14));
  d.ask(7, 1, 0x10000, 9);
  expect(header(await d.read(32))).toEqual({ cmd: PROTOCOL.replyCmd, nr: 1, vaddr: 0x10000, task: 9 });
  expect(await d.read(PAGE)).toEqual(Buffer.alloc(PAGE, 103));
  d.ask(7, 2, 0x20000, 5);
  expect(header(await d.read(32)).nr).toBe(2);
  expect(await d.read(2 * PAGE)).toEqual(Buffer.concat([Buffer.alloc(PAGE, 101), Buffer.alloc(PAGE, 102)]));
  d.ask(0x1023, 0, 0, 0);
  expect(await d.read(4)).toEqual(Buffer.alloc(4));
  await expect(serving).resolves.toEqual({ requests: 3, pages: 5 });
});

test('a page no run holds, a command no daemon sends, a file that ends early and a daemon that goes away each fail it with why', async () => {
  const file = pagesFile(2, 0);
  const runs = packLazyServeRuns([{ task: 1, vaddr: 0x1000, pages: 4, file: 0, offset: 0 }]);
  for (const [ask, code, message] of [
    [[7, 1, 0x5000, 1], 'ENOENT', /no lazy page of task 1 at 0x5000/],
    [[7, 1, 0x1000, 2], 'ENOENT', /no lazy page of task 2/],
    [[7, 1, 0x1800, 1], 'ENOENT', /no lazy page/],
    [[3, 1, 0x1000, 1], 'EPROTO', /command 3 is not one a lazy-pages daemon sends/],
    [[7, 4, 0x1000, 1], 'EIO', /ended early/],
  ] as const) {
    const d = daemon();
    const serving = sys.lazyServe(d.fd, runs, [file], PROTOCOL);
    d.ask(...(ask as unknown as [number, number, number, number]));
    await expect(serving).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
  }
  const d = daemon();
  const serving = sys.lazyServe(d.fd, runs, [file], PROTOCOL);
  sockets.pop()!.destroy();
  await expect(serving).rejects.toMatchObject({ code: 'EPIPE', message: expect.stringMatching(/went away before it had every page/) });
});

test('an abort stops it waiting for the next request', async () => {
  const file = pagesFile(1, 0);
  const d = daemon();
  const stop = new AbortController();
  const serving = sys.lazyServe(d.fd, packLazyServeRuns([{ task: 1, vaddr: 0, pages: 1, file: 0, offset: 0 }]), [file], PROTOCOL, { signal: stop.signal });
  setTimeout(() => stop.abort(), 50);
  await expect(serving).rejects.toMatchObject({ code: 'ECANCELED' });
});

test('a table out of order, overlapping, or naming a file it was not given is refused before anything is served', async () => {
  const file = pagesFile(1, 0);
  const d = daemon();
  const bad = [
    [{ task: 2, vaddr: 0, pages: 1, file: 0, offset: 0 }, { task: 1, vaddr: 0, pages: 1, file: 0, offset: 0 }],
    [{ task: 1, vaddr: 0, pages: 2, file: 0, offset: 0 }, { task: 1, vaddr: PAGE, pages: 1, file: 0, offset: 0 }],
    [{ task: 1, vaddr: 0, pages: 1, file: 1, offset: 0 }],
    [{ task: 1, vaddr: 100, pages: 1, file: 0, offset: 0 }],
  ];
  for (const runs of bad) {
    await expect(sys.lazyServe(d.fd, packLazyServeRuns(runs), [file], PROTOCOL)).rejects.toThrow(/argument 'runs' must be (sorted by \(task, vaddr\) and not overlapping|page-aligned runs)/);
  }
  expect(() => packLazyServeRuns([{ task: -1, vaddr: 0, pages: 1, file: 0, offset: 0 }])).toThrow(SyscallArgumentError);
  await expect(sys.lazyServe(d.fd, new Uint8Array(41), [file], PROTOCOL)).rejects.toBeInstanceOf(SyscallArgumentError);
});
