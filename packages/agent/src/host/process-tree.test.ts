import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode } from '@ferry/protocol';
import {
  childrenOf,
  isAlive,
  listTree,
  livingProcesses,
  parseProcessStat,
  readPidNamespace,
  readProcessStat,
  rssBytes,
  signalProcess,
  signalTree,
  treeRssBytes,
  waitForExit,
} from './process-tree';
import { waitFor } from '../test-fixtures/workload-fixtures';

const spawned: ChildProcess[] = [];

function start(script: string): ChildProcess & { pid: number } {
  const child = spawn('/bin/sh', ['-c', script], { stdio: 'ignore' });
  spawned.push(child);
  if (child.pid === undefined) throw new Error('spawn failed');
  return child as ChildProcess & { pid: number };
}

afterEach(async () => {
  for (const child of spawned.splice(0)) {
    if (child.pid === undefined) continue;
    for (const pid of (await listTree(child.pid)).reverse()) signalProcess(pid, 'SIGKILL');
    await waitForExit(child.pid, 5000);
  }
});

describe('parseProcessStat', () => {
  it('counts fields from the last parenthesis, so a comm with spaces and parentheses parses', () => {
    const line = '4242 (a b) (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10';
    expect(parseProcessStat(line)).toEqual({ pid: 4242, comm: 'a b) (c)', state: 'S', ppid: 17, pgrp: 4242, session: 4242, startTime: 987654 });
  });
});

describe('readProcessStat / isAlive', () => {
  it('reads our own process', async () => {
    const stat = await readProcessStat(process.pid);
    expect(stat?.pid).toBe(process.pid);
    expect(stat?.ppid).toBe(process.ppid);
    expect(stat?.startTime).toBeGreaterThan(0);
    expect(await isAlive(process.pid, stat?.startTime)).toBe(true);
  });

  it('says a pid with another start time is not the same process', async () => {
    const stat = await readProcessStat(process.pid);
    expect(await isAlive(process.pid, (stat?.startTime ?? 0) + 1)).toBe(false);
  });

  it('returns undefined / false for a gone process', async () => {
    const child = start('exit 0');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(await readProcessStat(child.pid)).toBeUndefined();
    expect(await isAlive(child.pid)).toBe(false);
  });

  it('counts a zombie as gone', async () => {
    // The exec'd sleep never waits for the background one, which stays a zombie.
    const child = start('sleep 0.05 & exec sleep 30');
    const zombie = await waitFor('a zombie child', 5000, async () => {
      const [pid] = await childrenOf(child.pid);
      return pid !== undefined && (await readProcessStat(pid))?.state === 'Z' ? pid : undefined;
    });
    expect(await isAlive(zombie)).toBe(false);
    expect(await isAlive(child.pid)).toBe(true);
    // A tree keeps its zombie (CRIU moves it); the pre-flight's scans skip it, whose /proc files fail (EINVAL).
    expect(await listTree(child.pid)).toEqual([child.pid, zombie]);
    expect(await livingProcesses(await listTree(child.pid))).toEqual([child.pid]);
  });

  it('rejects pids that are not positive integers', async () => {
    await expect(readProcessStat(0)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(readProcessStat(1.5)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
  });
});

describe('trees', () => {
  it('lists every process of a tree and sums its memory', async () => {
    const root = start('sleep 30 & sleep 30 & wait');
    const tree = await waitFor('three processes', 5000, async () => {
      const pids = await listTree(root.pid);
      return pids.length === 3 ? pids : undefined;
    });
    expect(tree[0]).toBe(root.pid);
    expect((await childrenOf(root.pid)).sort()).toEqual(tree.slice(1).sort());
    for (const pid of tree.slice(1)) expect((await readProcessStat(pid))?.ppid).toBe(root.pid);
    const total = await treeRssBytes(root.pid);
    expect(total).toBeGreaterThan(await rssBytes(root.pid));
    expect(total % 1024).toBe(0);
  });

  it('stops and continues a whole tree', async () => {
    const root = start('sleep 30 & sleep 30 & wait');
    await waitFor('three processes', 5000, async () => ((await listTree(root.pid)).length === 3 ? true : undefined));
    const stopped = await signalTree(root.pid, 'SIGSTOP');
    expect(stopped).toHaveLength(3);
    await waitFor('all stopped', 5000, async () => {
      const states = await Promise.all(stopped.map(async (pid) => (await readProcessStat(pid))?.state));
      return states.every((s) => s === 'T') ? true : undefined;
    });
    await signalTree(root.pid, 'SIGCONT');
    await waitFor('all running again', 5000, async () => {
      const states = await Promise.all(stopped.map(async (pid) => (await readProcessStat(pid))?.state));
      return states.every((s) => s === 'S' || s === 'R') ? true : undefined;
    });
  });

  it('refuses to signal pid 1', async () => {
    await expect(signalTree(1, 'SIGCONT')).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(() => signalProcess(-1, 'SIGCONT')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  });

  it('returns an empty tree for a gone root', async () => {
    const child = start('exit 0');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(await listTree(child.pid)).toEqual([]);
    expect(await childrenOf(child.pid)).toEqual([]);
    expect(await treeRssBytes(child.pid)).toBe(0);
  });
});

describe('waitForExit / readPidNamespace', () => {
  it('times out on a live process and returns once it is killed', async () => {
    const child = start('exec sleep 30');
    expect(await waitForExit(child.pid, 50)).toBe(false);
    signalProcess(child.pid, 'SIGKILL');
    expect(await waitForExit(child.pid, 5000)).toBe(true);
  });

  it('reads PID namespaces', async () => {
    const ours = await readPidNamespace('self');
    expect(ours).toMatch(/^pid:\[\d+\]$/);
    expect(await readPidNamespace(process.pid)).toBe(ours);
  });
});
