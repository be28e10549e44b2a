/**
 * Pre-flight CPU compatibility (DESIGN.md "A migration", step 1): the source describes its CPU
 * with `criu cpuinfo dump`, the target checks that description against its own CPU with
 * `criu cpuinfo check`. A restore onto a CPU lacking features the dumped tasks may use would
 * crash them after the source copy is gone, so this runs before anything is frozen.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError, type CpuinfoCheckReply } from '@ferry/protocol';
import type { CriuDriver } from './criu-driver';
import type { WorkDirs } from '../host/work-dir';

/** CRIU's file name for the CPU description in an images dir. */
export const CPUINFO_IMAGE = 'cpuinfo.img';

/** Scratch dirs live beside migration work dirs (tmpfs, 0700) under ids no migration uses. */
let scratchSeq = 0;
function scratchId(kind: string): string {
  scratchSeq = (scratchSeq + 1) % 1_000_000;
  return `cpu-${kind}-${process.pid}-${scratchSeq}`;
}

function criuLines(run: { stdout: string; stderr: string }): string {
  const lines = `${run.stdout}\n${run.stderr}`.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => /error|mismatch|not supported|fail/i.test(l));
  return (errors.length > 0 ? errors : lines).slice(0, 20).join('\n');
}

/** `criu cpuinfo dump`: this host's CPU description, as CRIU's image bytes. */
export async function dumpCpuinfo(criu: CriuDriver, workDirs: WorkDirs): Promise<Buffer> {
  const id = scratchId('dump');
  const dir = await workDirs.create(id);
  try {
    const run = await criu.run(['cpuinfo', 'dump', '-D', dir], dir);
    if (run.exitCode !== 0) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `criu cpuinfo dump failed (exit status ${run.exitCode ?? run.signal})`, {
        details: criuLines(run).split('\n'),
      });
    }
    return await readFile(join(dir, CPUINFO_IMAGE));
  } finally {
    await workDirs.remove(id);
  }
}

/** `criu cpuinfo check` of another host's description against this CPU. */
export async function checkCpuinfo(criu: CriuDriver, workDirs: WorkDirs, image: Uint8Array): Promise<CpuinfoCheckReply> {
  const id = scratchId('check');
  const dir = await workDirs.create(id);
  try {
    await writeFile(join(dir, CPUINFO_IMAGE), image, { mode: 0o600 });
    const run = await criu.run(['cpuinfo', 'check', '-D', dir], dir);
    return run.exitCode === 0 ? { compatible: true } : { compatible: false, problem: criuLines(run) || `exit status ${run.exitCode ?? run.signal}` };
  } finally {
    await workDirs.remove(id);
  }
}
