import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { createLinuxSyscalls, PAGE_RELAY_MAX_PAGES } from '@ferry/native';
import { silentLogger } from '@ferry/protocol';
import type { CriuDriver } from '../criu/criu-driver';
import { PE_LAZY, parsePagemap } from '../criu/pagemap-image';
import { pagemapEntry, pagemapHeader } from '../test-fixtures/pagemap-fixtures';
import { relayPlan, startPostCopyMemory, startTunnelledPostCopyMemory } from './lazy-memory-feed';

/** A task's pagemap image with one lazy run of `nrPages` pages at `vaddr`. */
function pagemap(vaddr: number, nrPages: number): Buffer {
  const header = pagemapHeader();
  const head = Buffer.from([0x08, 0x01]);
  const entry = pagemapEntry(vaddr, nrPages, PE_LAZY);
  const record = (b: Buffer) => Buffer.concat([Buffer.from(Uint32Array.of(b.length).buffer), b]);
  return Buffer.concat([header, record(head), record(entry)]);
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-feed-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a source claiming 2^40 lazy pages is refused before anything is planned or allocated for them', async () => {
  await writeFile(join(dir, 'pagemap-1.img'), pagemap(0x7f00_0000_0000, 2 ** 40));
  const started = Date.now();
  await expect(
    startPostCopyMemory({} as CriuDriver, dir, { nc: {} as NatsConnection, transferId: 't1', pagesKey: null, tlsDir: join(dir, 'tls'), syscalls: createLinuxSyscalls() }, silentLogger),
  ).rejects.toMatchObject({ code: 'RESTORE_FAILED', message: expect.stringMatching(/lazy memory, more than this host/) });
  expect(Date.now() - started).toBeLessThan(2_000);
});

test('a run that is not page-aligned, or ends beyond any user address space, is a corrupt image', () => {
  expect(() => parsePagemap(pagemap(0x7f00_0000_0001, 1))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/page-aligned/) }));
  expect(() => parsePagemap(pagemap(2 ** 56, 2 ** 45))).toThrow(expect.objectContaining({ message: expect.stringMatching(/beyond any user address space/) }));
});

test('the pull through the page tunnel plans every task\'s lazy runs by address, bounded, and refuses a source claiming more than the host', async () => {
  const runs = [
    { pid: 9, vaddr: 0x5000, nrPages: 2 },
    { pid: 3, vaddr: 0x9000, nrPages: 1 },
    { pid: 3, vaddr: 0x1000, nrPages: 4 },
  ];
  expect(relayPlan(runs)).toEqual([
    { task: 3, vaddr: 0x1000, pages: 4 },
    { task: 3, vaddr: 0x9000, pages: 1 },
    { task: 9, vaddr: 0x5000, pages: 2 },
  ]);
  // Beyond the relay's books (16 GiB) the plan stops: later pages are passed on when asked for.
  const big = [
    { pid: 1, vaddr: 0, nrPages: PAGE_RELAY_MAX_PAGES - 1 },
    { pid: 1, vaddr: 2 ** 40, nrPages: 5 },
    { pid: 2, vaddr: 0, nrPages: 5 },
  ];
  expect(relayPlan(big, 2 ** 45)).toEqual([
    { task: 1, vaddr: 0, pages: PAGE_RELAY_MAX_PAGES - 1 },
    { task: 1, vaddr: 2 ** 40, pages: 1 },
  ]);
  expect(() => relayPlan(runs, 4 * 4096)).toThrow(expect.objectContaining({ code: 'RESTORE_FAILED' }));

  // A hostile image claiming 2^40 lazy pages: refused before any thread or daemon starts, the tunnel's end closed.
  await writeFile(join(dir, 'pagemap-1.img'), pagemap(0x7f00_0000_0000, 2 ** 40));
  const sys = createLinuxSyscalls();
  const [tunnelFd, other] = sys.socketpair();
  try {
    await expect(startTunnelledPostCopyMemory({} as CriuDriver, dir, tunnelFd, sys, silentLogger)).rejects.toMatchObject({
      code: 'RESTORE_FAILED',
      message: expect.stringMatching(/pull could not be planned: .*lazy memory, more than this host/),
    });
    expect(() => sys.close(tunnelFd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  } finally {
    sys.close(other);
  }
});
