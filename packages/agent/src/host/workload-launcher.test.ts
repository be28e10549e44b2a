import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode } from '@ferry/protocol';
import { isAlive, readPidNamespace, readProcessStat, signalProcess, waitForExit } from './process-tree';
import { compileWorkloadLauncherOptions, DEFAULT_WORKLOAD_PATH, launchWorkload, waitForWrapperExit, type LaunchedWorkload } from './workload-launcher';
import { waitFor } from '../test-fixtures/workload-fixtures';

let dir: string;
const launched: LaunchedWorkload[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-launcher-'));
});

afterEach(async () => {
  for (const workload of launched.splice(0)) {
    // SIGKILL to the PID namespace init takes the whole namespace with it.
    if (await isAlive(workload.pid, workload.startTime)) signalProcess(workload.pid, 'SIGKILL');
    await waitForExit(workload.pid, 5000, workload.startTime);
    await waitForWrapperExit(workload, 5000);
  }
  await fs.rm(dir, { recursive: true, force: true });
});

async function launch(argv: string[], env: Record<string, string> = {}): Promise<LaunchedWorkload> {
  const workload = await launchWorkload({ name: 'w1', argv, env, cwd: dir, logPath: path.join(dir, 'w1.log') });
  launched.push(workload);
  return workload;
}

describe('launchWorkload', () => {
  it('starts the root as PID namespace init and session leader, under the unshare wrapper', async () => {
    const workload = await launch(['/bin/sh', '-c', 'echo started $$; exec sleep 30']);
    expect(workload.pid).not.toBe(workload.wrapperPid);
    const stat = await readProcessStat(workload.pid);
    expect(stat).toMatchObject({ ppid: workload.wrapperPid, session: workload.pid, pgrp: workload.pid, startTime: workload.startTime });
    expect(await readPidNamespace(workload.pid)).not.toBe(await readPidNamespace('self'));
    const ipc = async (pid: number | 'self') => fs.readlink(`/proc/${pid}/ns/ipc`);
    expect(await ipc(workload.pid)).not.toBe(await ipc('self'));
    // Inside its namespace the root is pid 1.
    const log = await waitFor('the log line', 5000, async () => {
      const text = await fs.readFile(path.join(dir, 'w1.log'), 'utf8');
      return text.includes('\n') ? text : undefined;
    });
    expect(log).toBe('started 1\n');
  });

  it('gives the workload exactly stdin /dev/null and stdout+stderr on its log, and only the env it was given', async () => {
    const workload = await launch(['/bin/sleep', '30'], { FOO: 'bar' });
    await waitFor('sleep to be exec-ed', 5000, async () => ((await readProcessStat(workload.pid))?.comm === 'sleep' ? true : undefined));
    const fds = (await fs.readdir(`/proc/${workload.pid}/fd`)).sort();
    expect(fds).toEqual(['0', '1', '2']);
    expect(await fs.readlink(`/proc/${workload.pid}/fd/0`)).toBe('/dev/null');
    expect(await fs.readlink(`/proc/${workload.pid}/fd/1`)).toBe(path.join(dir, 'w1.log'));
    expect(await fs.readlink(`/proc/${workload.pid}/fd/2`)).toBe(path.join(dir, 'w1.log'));
    // O_APPEND (02000 octal) on the log: CRIU skips its size check for append-only files.
    const fdinfo = await fs.readFile(`/proc/${workload.pid}/fdinfo/1`, 'utf8');
    const flags = parseInt(/flags:\s+(\d+)/.exec(fdinfo)?.[1] ?? '0', 8);
    expect(flags & 0o2000).toBe(0o2000);
    const environ = (await fs.readFile(`/proc/${workload.pid}/environ`, 'utf8')).split('\0').filter(Boolean).sort();
    expect(environ).toEqual(['FOO=bar', `PATH=${DEFAULT_WORKLOAD_PATH}`]);
    expect(await fs.readlink(`/proc/${workload.pid}/cwd`)).toBe(dir);
  });

  it('reports the workload ending through the wrapper child', async () => {
    const workload = await launch(['/bin/sh', '-c', 'sleep 0.2; exit 7']);
    const code = await new Promise((resolve) => workload.child.once('exit', (c) => resolve(c)));
    expect(code).toBe(7);
    expect(await isAlive(workload.pid, workload.startTime)).toBe(false);
  });

  it('fails with INVALID_ARGUMENT for a program that does not exist, quoting its log', async () => {
    const err = await launch(['/nonexistent/program']).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect((err as { details: string[] }).details.join('\n')).toMatch(/nonexistent/);
  });

  it('validates its request and options', async () => {
    await expect(launch([])).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(launchWorkload({ name: 'w', argv: ['true'], env: {}, cwd: 'relative', logPath: '/tmp/x.log' })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(
      launchWorkload({ name: 'w', argv: ['true'], env: {}, cwd: path.join(dir, 'missing'), logPath: path.join(dir, 'x.log') }),
    ).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(launch(['true'], { 'A=B': 'x' })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(() => compileWorkloadLauncherOptions({ unsharePath: 'unshare' })).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
    expect(() => compileWorkloadLauncherOptions({ startTimeoutMs: 0 })).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  });
});
