import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { createLinuxSyscalls } from '@ferry/native';
import { silentLogger } from '@ferry/protocol';
import type { CriuDriver } from '../criu/criu-driver';
import { PE_LAZY, parsePagemap } from '../criu/pagemap-image';
import { pagemapEntry, pagemapHeader } from '../test-fixtures/pagemap-fixtures';
import { startPostCopyMemory } from './lazy-memory-feed';

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
