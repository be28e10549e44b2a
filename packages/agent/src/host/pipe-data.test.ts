import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLinuxSyscalls } from '@ferry/native';
import { startStateHolder } from '../test-fixtures/workload-fixtures';
import { fifosOutside, pipesWithData } from './pipe-data';

// A FIFO holding 5 unread bytes (fd 3), an anonymous pipe holding 7 (fds 4 and 5), an empty pipe.
const HOLDER = `
import os, sys, time
d = sys.argv[1]
f = os.path.join(d, "q.fifo")
os.mkfifo(f)
fifo = os.open(f, os.O_RDWR)
os.write(fifo, b"fifo!")
r, w = os.pipe()
os.write(w, b"7 bytes")
er, ew = os.pipe()
open(os.path.join(d, "ready"), "w").write("%d %d %d" % (fifo, r, w))
time.sleep(60)
`;

let dir: string;
let child: ChildProcess;
let fds: number[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-pipes-'));
  const holder = await startStateHolder(HOLDER, dir);
  child = holder.child;
  fds = holder.ready.split(' ').map(Number);
});

afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('finds the pipes and FIFOs holding unread data, once each, without reading them', async () => {
  const sys = createLinuxSyscalls();
  const found = await pipesWithData([child.pid!], sys);
  const [fifoFd, readFd] = fds;
  expect(found).toHaveLength(2);
  expect(found).toContainEqual({ pid: child.pid, fd: fifoFd, name: join(dir, 'q.fifo'), unreadBytes: 5 });
  // Both ends of the anonymous pipe are one pipe: reported once, by the first fd seen.
  expect(found).toContainEqual(expect.objectContaining({ pid: child.pid, name: expect.stringMatching(/^pipe:\[\d+\]$/), unreadBytes: 7 }));
  expect(found.find((p) => p.unreadBytes === 7)!.fd).toBeLessThanOrEqual(readFd + 1);
  // Looking did not consume anything.
  expect((await pipesWithData([child.pid!], sys)).map((p) => p.unreadBytes).sort()).toEqual([5, 7]);
  // Only the FIFO has a path, and only outside the given dirs does it count.
  expect(fifosOutside(found, () => false).map((p) => p.name)).toEqual([join(dir, 'q.fifo')]);
  expect(fifosOutside(found, (path) => path.startsWith(`${dir}/`))).toEqual([]);
  // A process that is gone has no pipes.
  expect(await pipesWithData([999_999_999], sys)).toEqual([]);
});
