/**
 * Helpers for tests that run the fixture workloads in this folder. Test-only: nothing in the agent
 * imports this file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { isAlive } from '../host/process-tree';

/** python3 from the distribution: the fixtures need nothing beyond its standard library. */
export const FIXTURE_PYTHON = '/usr/bin/python3';
export const MEMORY_COUNTER_SCRIPT = path.join(__dirname, 'memory-counter.py');
export const PIPE_COUNTER_SCRIPT = path.join(__dirname, 'pipe-counter.py');

/** argv of memory-counter.py: `mib` MiB of data from `seed`, a counter every `intervalMs`. */
export function memoryCounterArgv(o: { mib: number; seed: number; intervalMs: number; counterFile: string; verifyFile: string }): string[] {
  return [FIXTURE_PYTHON, MEMORY_COUNTER_SCRIPT, String(o.mib), String(o.seed), String(o.intervalMs), o.counterFile, o.verifyFile];
}

/** argv of pipe-counter.py: a child sends a counter every `intervalMs` through a pipe, the parent logs it. */
export function pipeCounterArgv(o: { intervalMs: number; counterFile: string }): string[] {
  return [FIXTURE_PYTHON, PIPE_COUNTER_SCRIPT, String(o.intervalMs), o.counterFile];
}

/** The complete lines of a file (a half-written last line is left out); empty when it does not exist. */
export async function readLines(file: string): Promise<string[]> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const lines = text.split('\n');
  lines.pop();
  return lines;
}

/** The numbers in a counter file, in order. */
export async function readCounters(file: string): Promise<number[]> {
  return (await readLines(file)).map(Number);
}

/** Polls `probe` every 10 ms until it returns something other than undefined; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Living processes whose command line contains `token` (e.g. a test's unique temp dir). */
export async function livePidsWithArg(token: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').some((arg) => arg.includes(token)) && (await isAlive(Number(entry)))) pids.push(Number(entry));
  }
  return pids;
}

/** True when every number follows the one before it by exactly one. */
export function isConsecutive(numbers: number[]): boolean {
  return numbers.every((n, i) => i === 0 || n === (numbers[i - 1] as number) + 1);
}

/**
 * Runs a Python `script` (given `dir` as argv[1]) that sets up some process state and then writes
 * `dir/ready`; resolves with the child and what it wrote there. The caller kills it (by PID).
 */
export async function startStateHolder(script: string, dir: string, timeoutMs = 10_000): Promise<{ child: ChildProcess; ready: string }> {
  const child = spawn(FIXTURE_PYTHON, ['-c', script, dir], { stdio: 'ignore' });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      return { child, ready: readFileSync(path.join(dir, 'ready'), 'utf8') };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill('SIGKILL');
  throw new Error('holder did not start');
}
