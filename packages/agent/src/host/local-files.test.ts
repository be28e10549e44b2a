import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_LOCAL_FILES, type FileIdentity } from '@ferry/protocol';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { checkFiles, FileDigests, findHeldFiles, listLocalFiles, readBootId, type LocalFileScope } from './local-files';

// Holds, each as a real program would: a file through an fd, another only through a mapping, one
// in a declared local dir, one under a cluster filesystem's mount point, its own log, a deleted
// file, /proc and /dev files, a POSIX shared memory object (/dev/shm), a pipe and a directory.
const HOLDER = `
import ctypes, os, sys, time
d = sys.argv[1]
def make(name, data):
    p = os.path.join(d, name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return p
held = [os.open(make("fd-held", b"held by an fd\\n" * 300), os.O_RDWR)]
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
mfd = os.open(make("map-held", b"m" * 8192), os.O_RDONLY)
libc.mmap(None, 8192, 1, 1, mfd, 0)
os.close(mfd)
for name in ["local/dir-held", "mnt/mount-held", "own.log"]:
    held.append(os.open(make(name, b"x"), os.O_RDONLY))
gone = make("deleted-held", b"gone")
held.append(os.open(gone, os.O_RDONLY))
os.unlink(gone)
held += [os.open("/proc/self/status", os.O_RDONLY), os.open("/dev/null", os.O_RDONLY), os.open(d, os.O_RDONLY)]
held += list(os.pipe())
shm = "/dev/shm/ferry-local-files-%d" % os.getpid()
held.append(os.open(shm, os.O_RDWR | os.O_CREAT, 0o600))
os.write(held[-1], b"shared")
open(os.path.join(d, "ready"), "w").write(shm)
time.sleep(120)
`;

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

let dir: string;
let child: ChildProcess;
/** The holder's POSIX shared memory object. */
let shm: string;
let scope: LocalFileScope;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-local-files-'));
  const holder = await startStateHolder(HOLDER, dir);
  child = holder.child;
  shm = holder.ready;
  scope = { mounts: [join(dir, 'mnt')], localDirs: [join(dir, 'local')], ownFiles: [join(dir, 'own.log')] };
});

afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  if (shm) rmSync(shm, { force: true });
});

/** The identity a file has, as the test reads it itself. */
const BOOT_ID = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/** A file's identity as the source lists it (`withInode`) or as a test builds one for another path. */
function identityOf(path: string, withInode = false): FileIdentity {
  const st = statSync(path);
  return { path, size: st.size, mtimeMs: st.mtimeMs, sha256: sha256(readFileSync(path)), ...(withInode ? { inode: { bootId: BOOT_ID, dev: st.dev, ino: st.ino } } : {}) };
}

test('lists the regular files held by an fd and by a mapping, with their identity, and nothing of what moves another way', async () => {
  const held = await findHeldFiles([child.pid!], scope);
  const mine = held.filter((f) => f.path.startsWith(`${dir}/`));
  expect(mine.map((f) => [f.path, f.kind]).sort()).toEqual([
    [join(dir, 'fd-held'), 'fd'],
    [join(dir, 'map-held'), 'mmap'],
  ]);
  // Only regular files outside pseudo filesystems: no /proc, /dev, pipe, directory or deleted file.
  expect(held.every((f) => f.path.startsWith('/') && !/^\/(proc|sys|dev\/(?!shm\/))/.test(f.path) && statSync(f.path).isFile())).toBe(true);
  // A POSIX shared memory object is a file on this host's tmpfs: the target must have it too.
  expect(held.filter((f) => f.path === shm).map((f) => f.kind)).toEqual(['fd']);

  const files = await listLocalFiles([child.pid!], scope, { digests: new FileDigests() });
  expect(files.filter((f) => f.path.startsWith(`${dir}/`)).sort((a, b) => a.path.localeCompare(b.path))).toEqual([
    identityOf(join(dir, 'fd-held'), true),
    identityOf(join(dir, 'map-held'), true),
  ]);
  // The interpreter itself is mapped: a system file, listed (the target must have the same one).
  expect(files).toContainEqual(identityOf(realpathSync('/usr/bin/python3'), true));
});

test('a file is hashed once while it stays the same, again once it changed; cached files cost no budget', async () => {
  const digests = new FileDigests();
  const first = await listLocalFiles([child.pid!], scope, { digests });
  expect(digests.hashedBytes).toBe(first.reduce((n, f) => n + f.size, 0));
  const again = await listLocalFiles([child.pid!], scope, { digests, hashBudgetBytes: 0 });
  expect(again).toEqual(first);
  expect(digests.hashedBytes).toBe(first.reduce((n, f) => n + f.size, 0));

  appendFileSync(join(dir, 'fd-held'), 'one more line\n');
  const before = digests.hashedBytes;
  const changed = await listLocalFiles([child.pid!], scope, { digests });
  expect(digests.hashedBytes - before).toBe(statSync(join(dir, 'fd-held')).size);
  expect(changed.find((f) => f.path === join(dir, 'fd-held'))).toEqual(identityOf(join(dir, 'fd-held'), true));
});

test('over the hash budget: FAILED_PRECONDITION saying so, before reading a byte', async () => {
  const digests = new FileDigests();
  const err = await listLocalFiles([child.pid!], scope, { digests, hashBudgetBytes: 1000 }).catch((e: unknown) => e);
  expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/over the budget of 1000 bytes a migration may hash/) });
  expect(digests.hashedBytes).toBe(0);
});

test('more files than a pre-flight compares: FAILED_PRECONDITION', async () => {
  const many = mkdtempSync(join(tmpdir(), 'ferry-local-many-'));
  const script = `
import os, resource, sys, time
d = sys.argv[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fds = []
for i in range(${MAX_LOCAL_FILES + 1}):
    p = os.path.join(d, "f%d" % i)
    open(p, "w").write(str(i))
    fds.append(os.open(p, os.O_RDONLY))
open(os.path.join(d, "ready"), "w").write("1")
time.sleep(60)
`;
  const holder = (await startStateHolder(script, many, 30_000)).child;
  try {
    const err = await listLocalFiles([holder.pid!], { mounts: [], localDirs: [], ownFiles: [] }, { digests: new FileDigests() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/more than the 4096 a pre-flight compares/) });
  } finally {
    holder.kill('SIGKILL');
    rmSync(many, { recursive: true, force: true });
  }
});

test('a held file being written while it is read is listed without a digest: only the very same file (same kernel, device, inode) matches it', async () => {
  const busy = mkdtempSync(join(tmpdir(), 'ferry-local-busy-'));
  // 64 MiB take tens of ms to hash; the program rewrites a block every millisecond meanwhile.
  const script = `
import os, sys, time
d = sys.argv[1]
p = os.path.join(d, "busy")
with open(p, "wb") as f:
    f.truncate(64 * 1024 * 1024)
fd = os.open(p, os.O_RDWR)
open(os.path.join(d, "ready"), "w").write("1")
while True:
    os.pwrite(fd, os.urandom(4096), 0)
    time.sleep(0.001)
`;
  const holder = (await startStateHolder(script, busy)).child;
  try {
    const listed = await listLocalFiles([holder.pid!], { mounts: [], localDirs: [], ownFiles: [] }, { digests: new FileDigests() });
    const file = listed.find((f) => f.path === join(busy, 'busy'));
    expect(file).toBeDefined();
    expect(file!.sha256).toBeUndefined();
    const st = statSync(join(busy, 'busy'));
    expect(file!.inode).toEqual({ bootId: await readBootId(), dev: st.dev, ino: st.ino });
    // This kernel sees that very file: the same, whatever its bytes do meanwhile.
    expect(await checkFiles([file!], { digests: new FileDigests() })).toEqual({ missingDirs: [], missing: [], different: [] });
    // Another kernel (another boot id), or another file at the path here: being written, refused.
    expect(await checkFiles([{ ...file!, inode: { ...file!.inode!, bootId: '00000000-0000-0000-0000-000000000000' } }], { digests: new FileDigests() })).toEqual({ missingDirs: [],
      missing: [],
      different: [{ path: file!.path, why: 'written' }],
    });
    expect(await checkFiles([{ ...file!, inode: { ...file!.inode!, ino: file!.inode!.ino + 1 } }], { digests: new FileDigests() })).toEqual({ missingDirs: [],
      missing: [],
      different: [{ path: file!.path, why: 'written' }],
    });
  } finally {
    holder.kill('SIGKILL');
    rmSync(busy, { recursive: true, force: true });
  }
});

describe('the target check', () => {
  let target: string;

  beforeAll(() => {
    target = mkdtempSync(join(tmpdir(), 'ferry-local-target-'));
  });

  afterAll(() => rmSync(target, { recursive: true, force: true }));

  test('the same file passes; same size and mtime with other bytes, another size or mtime differ; a missing one is missing', async () => {
    const same = join(target, 'same');
    writeFileSync(same, 'the same bytes');
    const other = join(target, 'other');
    writeFileSync(other, 'other bytes!!!');
    const digests = new FileDigests();
    const want = [
      identityOf(same),
      // What the source has at that path: same size and mtime as the target's, other content.
      { ...identityOf(other), sha256: sha256('the same bytes') },
      { ...identityOf(same), path: join(target, 'bigger'), size: 1 },
      { ...identityOf(same), path: join(target, 'older'), mtimeMs: 1 },
      { ...identityOf(same), path: join(target, 'nowhere') },
      { ...identityOf(same), path: join(same, 'below-a-file') },
    ];
    writeFileSync(join(target, 'bigger'), 'the same bytes');
    writeFileSync(join(target, 'older'), 'the same bytes');
    expect(await checkFiles(want, { digests })).toEqual({ missingDirs: [],
      missing: [join(target, 'nowhere'), join(same, 'below-a-file')],
      different: [
        { path: join(target, 'bigger'), why: 'size' },
        { path: join(target, 'older'), why: 'mtime' },
        { path: other, why: 'sha256' },
      ],
    });
    // Both hashed once; asked again, from the cache (no budget needed).
    const hashed = digests.hashedBytes;
    expect(hashed).toBe(2 * 14);
    expect(await checkFiles(want.slice(0, 2), { digests, hashBudgetBytes: 0 })).toEqual({ missingDirs: [], missing: [], different: [{ path: other, why: 'sha256' }] });
    expect(digests.hashedBytes).toBe(hashed);
  });

  test('a symlink to the same file, a directory or a FIFO at the path is not the same file (and nothing blocks)', async () => {
    const real = join(target, 'real');
    writeFileSync(real, 'content');
    const link = join(target, 'link');
    symlinkSync(real, link);
    const asDir = join(target, 'a-dir');
    mkdirSync(asDir);
    const fifo = join(target, 'a-fifo');
    execFileSync('mkfifo', [fifo]);
    const want = [link, asDir, fifo].map((path) => ({ ...identityOf(real), path }));
    expect(await checkFiles(want, { digests: new FileDigests() })).toEqual({ missingDirs: [],
      missing: [],
      different: [link, asDir, fifo].map((path) => ({ path, why: 'type' })),
    });
  });

  test('content over the budget is refused with FAILED_PRECONDITION, before reading it', async () => {
    const big = join(target, 'big');
    writeFileSync(big, Buffer.alloc(4096, 7));
    const digests = new FileDigests();
    const err = await checkFiles([identityOf(big)], { digests, hashBudgetBytes: 4095 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/read 4096 bytes on the target, over the budget of 4095 bytes/) });
    expect(digests.hashedBytes).toBe(0);
  });
});

test("the target names each directory a workload's own root binds that it lacks as a directory (a file or symlink there is not one)", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-root-dirs-'));
  try {
    mkdirSync(join(dir, 'here'));
    writeFileSync(join(dir, 'file'), '');
    symlinkSync(join(dir, 'here'), join(dir, 'link'));
    const dirs = ['/usr', join(dir, 'here'), join(dir, 'gone'), join(dir, 'file'), join(dir, 'link')];
    expect(await checkFiles([], { digests: new FileDigests() }, dirs)).toEqual({
      missing: [],
      different: [],
      missingDirs: [join(dir, 'gone'), join(dir, 'file'), join(dir, 'link')],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
