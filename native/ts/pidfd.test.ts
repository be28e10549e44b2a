import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { createLinuxSyscalls, SyscallArgumentError, SyscallError } from './index';

const syscalls = createLinuxSyscalls();
const POLL_INTERVAL_MS = 10;
const WAIT_TIMEOUT_MS = 5_000;

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

describe('pidfd', () => {
  const children: ChildProcess[] = [];
  const fds: number[] = [];
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-native-pidfd-'));
  });

  afterEach(async () => {
    for (const fd of fds.splice(0)) syscalls.close(fd);
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function spawnTracked(command: string, args: string[]): ChildProcess {
    const child = spawn(command, args, { stdio: 'ignore' });
    children.push(child);
    return child;
  }

  it('pidfdOpen gives a pidfd for a spawned sleep', () => {
    const sleep = spawnTracked('sleep', ['30']);
    const pidfd = syscalls.pidfdOpen(sleep.pid!);
    fds.push(pidfd);
    expect(pidfd).toBeGreaterThanOrEqual(0);
    expect(fs.readlinkSync(`/proc/self/fd/${pidfd}`)).toBe('anon_inode:[pidfd]');
  });

  it('pidfdGetfd duplicates a child process fd into us', async () => {
    const file = path.join(dir, 'only-the-child-opened-this');
    fs.writeFileSync(file, 'content seen through the stolen fd');
    // The child opens the file itself on fd 7, so this process never had it open.
    const child = spawnTracked('sh', ['-c', 'exec 7< "$0"; exec sleep 30', file]);
    await waitFor(() => fs.existsSync(`/proc/${child.pid}/fd/7`), 'the child to open fd 7');
    fs.unlinkSync(file);

    const pidfd = syscalls.pidfdOpen(child.pid!);
    fds.push(pidfd);
    const fd = syscalls.pidfdGetfd(pidfd, 7);
    fds.push(fd);

    const buffer = Buffer.alloc(100);
    const bytesRead = fs.readSync(fd, buffer, 0, buffer.length, 0);
    expect(buffer.subarray(0, bytesRead).toString()).toBe('content seen through the stolen fd');
    expect(() => syscalls.pidfdGetfd(pidfd, 99)).toThrow(expect.objectContaining({ errno: 9, code: 'EBADF', syscall: 'pidfd_getfd' }));
  });

  it('reports a missing process as ESRCH and refuses bad arguments', () => {
    const pidMax = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    let error: unknown;
    try {
      syscalls.pidfdOpen(pidMax + 1);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toMatchObject({ errno: 3, code: 'ESRCH', syscall: 'pidfd_open' });

    expect(() => syscalls.pidfdOpen(0)).toThrow(SyscallArgumentError);
    expect(() => syscalls.pidfdOpen(-1)).toThrow(SyscallArgumentError);
    expect(() => syscalls.pidfdGetfd(3, 1.5)).toThrow(SyscallArgumentError);
  });
});
