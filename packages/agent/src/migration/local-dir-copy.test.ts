/**
 * Local dir archives (local-dir-copy.ts) end to end without the network: the sender's full and
 * incremental archives read from their live descriptors into files, the receiver extracting them
 * into another directory; what a copy must keep (sparse files, hard links, symlinks, modes, owners,
 * xattrs, mtimes) and what the second pass carries (changes and deletions).
 */
import { execFile } from 'node:child_process';
import { chmod, chown, link, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { read, write } from 'node:fs';
import { createLinuxSyscalls } from '@ferry/native';
import { ErrorCode, silentLogger } from '@ferry/protocol';
import { spillLiveFiles, type LiveImageFile } from '@ferry/transfer';
import { assertLocalDirsFree, backdateSnapshot, concatLive, LocalDirReceiver, LocalDirSender, localTarName, parseLocalTarName } from './local-dir-copy';

jest.setTimeout(60_000);

const sys = createLinuxSyscalls();
const readFd = promisify(read);
const writeFd = promisify(write);
let base: string;

beforeEach(async () => {
  base = await mkdtemp('/dev/shm/ferry-localdir-');
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** What a sender without a pump does with live files: each read to its end into `dir/<name>` (spillLiveFiles). */
async function drainInto(live: AsyncIterable<LiveImageFile>, dir: string, onFile?: (name: string, path: string) => void): Promise<string[]> {
  const names: string[] = [];
  for await (const file of live) {
    await spillLiveFiles([file], dir, () => undefined);
    names.push(file.path);
    onFile?.(file.path, join(dir, file.path));
  }
  return names;
}

const getfattr = async (path: string) => (await promisify(execFile)('getfattr', ['--absolute-names', '-n', 'user.note', '--only-values', path]).catch(() => ({ stdout: '' }))).stdout;
const setfattr = (path: string, value: string) => promisify(execFile)('setfattr', ['-n', 'user.note', '-v', value, path]);

test('a snapshot is backdated by its start time only, and a file it does not recognise is refused', async () => {
  const dir = join(base, 'd');
  await mkdir(dir);
  await writeFile(join(dir, 'a'), 'a');
  const snap = join(base, 's.snar');
  await promisify(execFile)('tar', ['--create', '--file=/dev/null', `--listed-incremental=${snap}`, '-C', dir, '.']);
  const before = await readFile(snap);
  await backdateSnapshot(snap, 2_500_000_000n);
  const after = await readFile(snap);
  /** The recorded start in ns, and what follows it. */
  const parse = (b: Buffer) => {
    const [sec, ns] = b.subarray(b.indexOf(0x0a) + 1).toString('latin1').split('\0');
    return { at: BigInt(sec!) * 1_000_000_000n + BigInt(ns!), rest: b.subarray(b.indexOf(0x00, b.indexOf(0x00) + 1)) };
  };
  expect(parse(before).at - parse(after).at).toBe(2_500_000_000n);
  expect(parse(after).rest.equals(parse(before).rest)).toBe(true);
  await writeFile(join(base, 'other'), 'not a snapshot\n1\u00002\u0000');
  await expect(backdateSnapshot(join(base, 'other'), 1n)).rejects.toMatchObject({ code: ErrorCode.CHECKPOINT_FAILED });
});

test('a file rewritten right after the first pass read it is in the second pass (the coarse clock lags tar\'s start)', async () => {
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const images = join(base, 'images');
  await mkdir(src);
  await mkdir(images);
  await writeFile(join(src, 'f'), 'old');
  const sender = new LocalDirSender(sys, [src], join(base, 'work'), silentLogger);
  const receiver = new LocalDirReceiver(sys, [dst], silentLogger);
  await drainInto(sender.fullArchives(), images, (name, path) => receiver.onImageFile(name, path));
  // At once: well within the tick the file's times may lag tar's start by.
  await writeFile(join(src, 'f'), 'new');
  await drainInto(sender.incrementalArchives(), images);
  await receiver.beforeRestore(images);
  expect(await readFile(join(dst, 'f'), 'utf8')).toBe('new');
});

test('names: index and pass, and nothing else parses', () => {
  expect(parseLocalTarName(localTarName(3, 'full'))).toEqual({ index: 3, pass: 'full' });
  expect(parseLocalTarName(localTarName(0, 'incr'))).toEqual({ index: 0, pass: 'incr' });
  for (const other of ['pages-1.img', 'ferry-local-x.full.tar', 'ferry-local-1.full.tar.gz', '../ferry-local-1.full.tar']) expect(parseLocalTarName(other)).toBeUndefined();
});

test('a directory copied in two passes arrives as it was at the second: content, sparseness, links, modes, owners, xattrs, mtimes, deletions', async () => {
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const images = join(base, 'images');
  await mkdir(join(src, 'sub'), { recursive: true });
  await mkdir(images);
  await writeFile(join(src, 'plain.txt'), 'first pass');
  await writeFile(join(src, 'goes-away.txt'), 'deleted before the second pass');
  // 1 GiB apparent, 4 KiB of data in the middle.
  await writeFile(join(src, 'sparse.img'), '');
  await truncate(join(src, 'sparse.img'), 1024 ** 3);
  const fh = await import('node:fs/promises').then((m) => m.open(join(src, 'sparse.img'), 'r+'));
  await fh.write(Buffer.alloc(4096, 7), 0, 4096, 512 * 1024 ** 2);
  await fh.close();
  await writeFile(join(src, 'sub', 'owned.bin'), Buffer.from([1, 2, 3]));
  await chown(join(src, 'sub', 'owned.bin'), 1234, 5678);
  await chmod(join(src, 'sub', 'owned.bin'), 0o640);
  await link(join(src, 'plain.txt'), join(src, 'sub', 'hardlink.txt'));
  await symlink('../plain.txt', join(src, 'sub', 'link'));
  await setfattr(join(src, 'plain.txt'), 'kept');
  const old = new Date('2020-01-02T03:04:05Z');
  await utimes(join(src, 'sub', 'owned.bin'), old, old);

  const sender = new LocalDirSender(sys, [src], join(base, 'work'), silentLogger);
  const receiver = new LocalDirReceiver(sys, [dst], silentLogger);
  expect(await drainInto(sender.fullArchives(), images, (name, path) => receiver.onImageFile(name, path))).toEqual(['ferry-local-0.full.tar']);
  await sender.precopied;

  // The workload writes on, then freezes: a change, a new file, a deletion.
  await writeFile(join(src, 'plain.txt'), 'second pass, longer than the first');
  await writeFile(join(src, 'new.txt'), 'new');
  await rm(join(src, 'goes-away.txt'));
  expect(await drainInto(sender.incrementalArchives(), images)).toEqual(['ferry-local-0.incr.tar']);
  await receiver.beforeRestore(images);

  expect(await readFile(join(dst, 'plain.txt'), 'utf8')).toBe('second pass, longer than the first');
  expect(await readFile(join(dst, 'new.txt'), 'utf8')).toBe('new');
  expect(await readdir(dst)).not.toContain('goes-away.txt');
  const sparse = await stat(join(dst, 'sparse.img'));
  expect(sparse.size).toBe(1024 ** 3);
  expect(sparse.blocks * 512).toBeLessThan(1024 * 1024);
  const owned = await stat(join(dst, 'sub', 'owned.bin'));
  expect([owned.uid, owned.gid, owned.mode & 0o777]).toEqual([1234, 5678, 0o640]);
  expect(owned.mtime.getTime()).toBe(old.getTime());
  expect((await stat(join(dst, 'sub', 'hardlink.txt'))).ino).toBe((await stat(join(dst, 'plain.txt'))).ino);
  expect(await readlink(join(dst, 'sub', 'link'))).toBe('../plain.txt');
  expect((await lstat(join(dst, 'sub', 'link'))).isSymbolicLink()).toBe(true);
  expect(await getfattr(join(dst, 'plain.txt'))).toBe('kept');
  // The archives are gone once applied; nothing of them stays in the images dir.
  expect(await readdir(images)).toEqual([]);
  // The source was only read.
  expect(await readFile(join(src, 'plain.txt'), 'utf8')).toBe('second pass, longer than the first');
});

test('a full archive streamed into the receiver\'s sink is extracted as it arrives, whole when the sink finishes', async () => {
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const images = join(base, 'images');
  await mkdir(join(src, 'deep', 'er'), { recursive: true });
  await mkdir(images);
  await writeFile(join(src, 'deep', 'er', 'data'), Buffer.alloc(3 * 1024 * 1024, 9));
  const sender = new LocalDirSender(sys, [src], join(base, 'work'), silentLogger);
  const receiver = new LocalDirReceiver(sys, [dst], silentLogger);
  expect(receiver.openSink('pages-1.img')).toBeUndefined();
  const buf = Buffer.alloc(1 << 20);
  for await (const file of sender.fullArchives()) {
    const sink = receiver.openSink(file.path)!;
    // What the receiver's pump does: the body into the sink's fd, in order.
    for (;;) {
      const { bytesRead } = await readFd(file.fd, buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      for (let off = 0; off < bytesRead; ) off += (await writeFd(sink.fd, buf, off, bytesRead - off)).bytesWritten;
    }
    await sink.finish();
    expect(sink.progress!()).toBe(0);
    file.onDone?.();
  }
  await sender.precopied;
  expect((await readFile(join(dst, 'deep', 'er', 'data'))).equals(Buffer.alloc(3 * 1024 * 1024, 9))).toBe(true);
  await writeFile(join(src, 'later'), 'later');
  await drainInto(sender.incrementalArchives(), images);
  await receiver.beforeRestore(images);
  expect(await readFile(join(dst, 'later'), 'utf8')).toBe('later');
});

test('a rollback removes what the receiver extracted; an archive naming no local dir fails the restore', async () => {
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const images = join(base, 'images');
  await mkdir(src);
  await mkdir(images);
  await writeFile(join(src, 'a'), 'a');
  const sender = new LocalDirSender(sys, [src], join(base, 'work'), silentLogger);
  const receiver = new LocalDirReceiver(sys, [dst], silentLogger);
  await drainInto(sender.fullArchives(), images, (name, path) => receiver.onImageFile(name, path));
  await receiver.discard();
  await expect(stat(dst)).rejects.toThrow();

  const stray = new LocalDirReceiver(sys, [dst], silentLogger);
  await writeFile(join(images, 'ferry-local-5.full.tar'), 'x');
  stray.onImageFile('ferry-local-5.full.tar', join(images, 'ferry-local-5.full.tar'));
  await expect(stray.beforeRestore(images)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
});

test('a target refuses a local dir it already holds with content', async () => {
  const taken = join(base, 'taken');
  await mkdir(taken);
  await writeFile(join(taken, 'someone-elses'), 'x');
  await expect(assertLocalDirsFree([taken])).rejects.toMatchObject({ code: ErrorCode.FAILED_PRECONDITION });
  await mkdir(join(base, 'empty'));
  await expect(assertLocalDirsFree([join(base, 'absent'), join(base, 'empty')])).resolves.toBeUndefined();
});

test('a sender stopped early kills tar and leaves no descriptor open', async () => {
  const src = join(base, 'src');
  await mkdir(src);
  await writeFile(join(src, 'big'), Buffer.alloc(8 * 1024 * 1024, 1));
  const before = (await readdir('/proc/self/fd')).length;
  const sender = new LocalDirSender(sys, [src], join(base, 'work'), silentLogger);
  const live = concatLive(sender.fullArchives());
  const first = await live.next();
  expect(first.done).toBe(false);
  await live.return(undefined);
  // tar is killed and waited for; its stderr pipe closes with it.
  for (let i = 0; i < 100 && (await readdir('/proc/self/fd')).length !== before; i++) await new Promise((r) => setTimeout(r, 20));
  expect((await readdir('/proc/self/fd')).length).toBe(before);
});
