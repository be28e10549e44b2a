import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { promisify } from 'node:util';

import { CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS, createLinuxSyscalls, SyscallArgumentError } from './index';
import { NATIVE_ADDON_PATH } from './native-binding';

// setns/unshare change the calling thread's namespaces for good, so every real call runs in a
// throwaway `node -e` child that loads the built addon; the jest process is never moved.

const CHILD_TIMEOUT_MS = 10_000;

/** Runs `body` in a fresh node process with `native` bound to the addon; returns what it prints as JSON. */
async function inChildNode(body: string): Promise<Record<string, unknown>> {
  const script = `const native = require(${JSON.stringify(NATIVE_ADDON_PATH)});
const cp = require('node:child_process'); const fs = require('node:fs'); const os = require('node:os');
const errorOf = (call) => { try { call(); return null; } catch (e) { return { errno: e.errno, code: e.code, syscall: e.syscall }; } };
${body}`;
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { timeout: CHILD_TIMEOUT_MS });
  return JSON.parse(stdout);
}

describe('unshare', () => {
  it('gives the calling thread a new UTS namespace (in a child node process)', async () => {
    const name = `ferrytest-${randomBytes(4).toString('hex')}`;
    const result = await inChildNode(`
      const before = os.hostname();
      native.unshare(native.CLONE_NEWUTS);
      // A process spawned from the main thread inherits that thread's namespaces.
      cp.execFileSync('hostname', [${JSON.stringify(name)}]);
      console.log(JSON.stringify({ before, after: os.hostname() }));`);
    expect(result.before).toBe(os.hostname());
    expect(result.after).toBe(name);
    expect(os.hostname()).not.toBe(name);
  });

  it('reports refusals with errno, code and syscall', async () => {
    // CLONE_VM (0x100) cannot be unshared by a process with other threads: EINVAL, no effect.
    const result = await inChildNode(`console.log(JSON.stringify(errorOf(() => native.unshare(0x100))));`);
    expect(result).toEqual({ errno: 22, code: 'EINVAL', syscall: 'unshare' });
  });

  it('refuses bad flags before calling the kernel', () => {
    const syscalls = createLinuxSyscalls();
    expect(() => syscalls.unshare(-1)).toThrow(SyscallArgumentError);
    expect(() => syscalls.unshare(CLONE_NEWUTS + 0.5)).toThrow(SyscallArgumentError);
  });
});

describe('setns', () => {
  const netns = `ferrytest-${randomBytes(4).toString('hex')}`;

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', netns]);
  });

  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', netns]);
  });

  it('moves the calling thread into a named network namespace (in a child node process)', async () => {
    const hostLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    expect(hostLinks.split('\n').filter((l) => l.length > 0).length).toBeGreaterThan(1);

    const result = await inChildNode(`
      const fd = fs.openSync('/run/netns/${netns}', 'r');
      const wrongType = errorOf(() => native.setns(fd, native.CLONE_NEWUTS));
      native.setns(fd, native.CLONE_NEWNET);
      fs.closeSync(fd);
      const links = cp.execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
        .split('\\n').filter((l) => l.length > 0).map((l) => l.split(':')[1].trim());
      console.log(JSON.stringify({ wrongType, links }));`);
    expect(result.links).toEqual(['lo']);
    expect(result.wrongType).toEqual({ errno: 22, code: 'EINVAL', syscall: 'setns' });
  });

  it('is refused EINVAL for a mount namespace: every Node process has threads sharing its fs_struct', async () => {
    const result = await inChildNode(`
      const fd = fs.openSync('/proc/self/ns/mnt', 'r');
      console.log(JSON.stringify(errorOf(() => native.setns(fd, native.CLONE_NEWNS))));`);
    expect(result).toEqual({ errno: 22, code: 'EINVAL', syscall: 'setns' });
  });

  it('refuses bad arguments before calling the kernel', () => {
    const syscalls = createLinuxSyscalls();
    expect(() => syscalls.setns(-1, CLONE_NEWNET)).toThrow(expect.objectContaining({ syscall: 'setns', argument: 'fd' }));
    expect(() => syscalls.setns(3, -CLONE_NEWNS)).toThrow(expect.objectContaining({ syscall: 'setns', argument: 'nstype' }));
  });
});
