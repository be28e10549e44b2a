import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { createLinuxSyscalls, SyscallArgumentError, SyscallError } from './index';
import { NATIVE_ADDON_PATH } from './native-binding';

// Becoming a subreaper changes who adopts orphans for the rest of a process's life, so the real
// calls run in a throwaway `node -e` child that loads the built addon.

const CHILD_TIMEOUT_MS = 10_000;

async function inChildNode(body: string): Promise<Record<string, unknown>> {
  const script = `const native = require(${JSON.stringify(NATIVE_ADDON_PATH)});
const cp = require('node:child_process'); const fs = require('node:fs');
const ppidOf = (pid) => Number(fs.readFileSync('/proc/' + pid + '/stat', 'utf8').split(') ')[1].split(' ')[1]);
async function reap(pid) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const status = native.waitpidNoHang(pid);
    if (status !== null) return status;
    if (Date.now() > deadline) { process.kill(pid, 'SIGKILL'); throw new Error('not reaped'); }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
(async () => { ${body} })().catch((e) => { console.error(e); process.exit(1); });`;
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { timeout: CHILD_TIMEOUT_MS });
  return JSON.parse(stdout);
}

describe('setChildSubreaper + waitpidNoHang', () => {
  it('adopts an orphaned grandchild and reaps its exit', async () => {
    const result = await inChildNode(`
      native.setChildSubreaper(true);
      // sh backgrounds sleep and exits at once; libuv reaps sh, the orphaned sleep comes to us.
      const pid = Number(cp.execSync("sh -c 'sleep 0.2 >/dev/null 2>&1 & echo $!'", { encoding: 'utf8' }));
      const ppid = ppidOf(pid);
      const whileRunning = native.waitpidNoHang(pid);
      const status = await reap(pid);
      console.log(JSON.stringify({ self: process.pid, pid, ppid, whileRunning, status, gone: !fs.existsSync('/proc/' + pid) }));`);
    expect(result.ppid).toBe(result.self);
    expect(result.whileRunning).toBeNull();
    expect(result.status).toEqual({ pid: result.pid, exited: true, status: 0, signal: null });
    expect(result.gone).toBe(true);
  });

  it('reports an adopted process killed by a signal', async () => {
    const result = await inChildNode(`
      native.setChildSubreaper(true);
      const pid = Number(cp.execSync("sh -c 'sleep 5 >/dev/null 2>&1 & echo $!'", { encoding: 'utf8' }));
      process.kill(pid, 'SIGTERM');
      console.log(JSON.stringify({ pid, status: await reap(pid) }));`);
    expect(result.status).toMatchObject({ pid: result.pid, exited: false, signal: 15 });
  });

  it('reports ECHILD for a process that is not our child, and refuses pids <= 0', () => {
    const syscalls = createLinuxSyscalls();
    let error: unknown;
    try {
      syscalls.waitpidNoHang(process.pid);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toMatchObject({ errno: 10, code: 'ECHILD', syscall: 'waitpid' });
    // -1 would reap any child, stealing exit statuses libuv is waiting for.
    expect(() => syscalls.waitpidNoHang(-1)).toThrow(SyscallArgumentError);
    expect(() => syscalls.waitpidNoHang(0)).toThrow(SyscallArgumentError);
    expect(() => syscalls.setChildSubreaper('yes' as unknown as boolean)).toThrow(SyscallArgumentError);
  });
});
