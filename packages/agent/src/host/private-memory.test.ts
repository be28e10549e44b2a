import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { privateMappingsWithPages, privateMemoryRuns } from './private-memory';

const SMAPS = `00400000-00401000 r--p 00000000 fd:01 123 /usr/bin/python3.11
Size:                  4 kB
Anonymous:             0 kB
00401000-00403000 rw-p 00001000 fd:01 123 /usr/bin/python3.11
Anonymous:             8 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
7f0000100000-7f0000200000 rw-s 00000000 00:01 77 /dev/zero (deleted)
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r--p 00000000 00:00 0                          [vvar]
Anonymous:             8 kB
7ffd00002000-7ffd00004000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             4 kB
7ffe00000000-7ffe00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            12 kB
`;

describe('privateMappingsWithPages', () => {
  test('private mappings holding anonymous pages, file-backed ones copied on write included; not shared ones, not the kernel\'s', () => {
    expect(privateMappingsWithPages(SMAPS)).toEqual([
      { start: 0x401000, end: 0x403000 },
      { start: 0x7f0000000000, end: 0x7f0000100000 },
      { start: 0x7ffe00000000, end: 0x7ffe00021000 },
    ]);
  });
});

describe('privateMemoryRuns', () => {
  test('a live process: its memory in address-ordered page runs, at least what it holds', async () => {
    const child = spawn('/usr/bin/python3', ['-c', 'import sys, os; b = bytearray(os.urandom(16 << 20)); print("ready", flush=True); sys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await once(child.stdout!, 'data');
      const { runs, count, bytes } = await privateMemoryRuns(child.pid!);
      expect(bytes).toBeGreaterThanOrEqual(16 << 20);
      expect(runs.length).toBe(count * 16);
      let total = 0;
      let previousEnd = 0n;
      for (let i = 0; i < count; i++) {
        const addr = runs.readBigUInt64LE(i * 16);
        const len = runs.readBigUInt64LE(i * 16 + 8);
        expect(addr % 4096n).toBe(0n);
        expect(len % 4096n).toBe(0n);
        expect(len).toBeGreaterThan(0n);
        // In address order, never overlapping (runs of two adjacent mappings may touch).
        expect(addr).toBeGreaterThanOrEqual(previousEnd);
        previousEnd = addr + len;
        total += Number(len);
      }
      expect(total).toBe(bytes);
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });

  test('a process that is gone has none', async () => {
    const child = spawn('/bin/true');
    await once(child, 'exit');
    expect(await privateMemoryRuns(child.pid!)).toMatchObject({ count: 0, bytes: 0 });
  });
});
