import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { checkGhostLimit, findUnlinkedFiles } from './unlinked-files';

// A process holding a deleted file through an fd (at offset 7), a sparse one of 2 GiB with 4 KiB
// written, and another only through a mapping.
const HOLDER = `
import ctypes, os, sys, time
d = sys.argv[1]
p = os.path.join(d, "fd-held")
open(p, "wb").write(b"x" * 5000)
fd = os.open(p, os.O_RDWR | os.O_APPEND)
os.lseek(fd, 7, 0)
os.unlink(p)
s = os.path.join(d, "sparse-held")
sf = open(s, "wb")
sf.seek(2 * 1024 ** 3)
sf.write(b"z" * 4096)
sf.flush()
os.unlink(s)
m = os.path.join(d, "map-held")
open(m, "wb").write(b"y" * 8192)
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
mfd = os.open(m, os.O_RDONLY)
libc.mmap(None, 8192, 1, 1, mfd, 0)
os.close(mfd)
os.unlink(m)
open(os.path.join(d, "ready"), "w").write("1")
time.sleep(60)
`;

let dir: string;
let child: ChildProcess;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-unlinked-'));
  child = (await startStateHolder(HOLDER, dir)).child;
});

afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('finds unlinked files behind fds and behind mappings, with flags, offset and a CRIU key', async () => {
  const files = await findUnlinkedFiles([child.pid!]);
  const byName = Object.fromEntries(files.map((f) => [f.path.split('/').pop(), f]));
  expect(Object.keys(byName).sort()).toEqual(['fd-held', 'map-held', 'sparse-held']);
  expect(byName['sparse-held'].size).toBe(2 * 1024 ** 3 + 4096);
  expect(byName['sparse-held'].allocatedBytes).toBeLessThan(1 << 20);
  const held = byName['fd-held'];
  expect(held).toMatchObject({ kind: 'fd', size: 5000, pos: 7, shared: false });
  // O_RDWR | O_APPEND kept; O_CLOEXEC (Python sets it) dropped.
  expect(held.flags).toBe(0o2 | 0o2000);
  expect(held.key).toMatch(/^file\[[0-9a-f]+:[0-9a-f]+\]$/);
  expect(byName['map-held']).toMatchObject({ kind: 'mmap', size: 8192, pos: 0, flags: 0, shared: false });
});

test('local unlinked files over the ghost limit are refused before the freeze, naming them', async () => {
  const files = await findUnlinkedFiles([child.pid!]);
  expect(() => checkGhostLimit(files, 1 << 20)).not.toThrow();
  // 5000 bytes take two 4 KiB blocks.
  expect(() => checkGhostLimit(files, 4096)).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/fd-held \(8192 bytes allocated\)/) }));
});

test('a sparse unlinked file is judged by its allocated blocks, not its apparent size', async () => {
  const sparse = (await findUnlinkedFiles([child.pid!])).filter((f) => f.path.endsWith('sparse-held'));
  expect(sparse).toHaveLength(1);
  expect(() => checkGhostLimit(sparse, 64 * 1024 * 1024)).not.toThrow();
  expect(() => checkGhostLimit(sparse, 1024)).toThrow(/sparse-held \(\d+ bytes allocated\)/);
});

test('a process that ended before it was looked at holds nothing (a backend whose client left between the listing and the read)', async () => {
  // A pid no process has: what /proc says of a process that ended after listTree saw it.
  const gone = 4_194_303;
  await expect(findUnlinkedFiles([gone])).resolves.toEqual([]);
  // And beside a living one, the living one's files are still found.
  const both = await findUnlinkedFiles([gone, child.pid!]);
  expect(both.length).toBeGreaterThan(0);
});
