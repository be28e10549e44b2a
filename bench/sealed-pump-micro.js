'use strict';
/**
 * Sealed-pump micro-benchmark (no CRIU, no network): BENCH_MIB MiB of zeros from a child (`dd`
 * writing 1 MiB at a time, standing in for CRIU splicing pages into its page-server socket) ->
 * socketpair -> seal pump -> socketpair -> open pump -> /dev/null, in this process's two pump
 * threads. Prints MB/s; this process's CPU seconds (process.cpuUsage: both pump threads and the JS
 * thread), each pump thread's (sampled from /proc/self/task) and the child's; and the event loop's
 * worst lateness (it should stay free: no JavaScript runs per byte). AES-GCM costs the same on
 * zeros as on random bytes.
 * Needs the built addon (`npm run build -w @ferry/native`). `node bench/sealed-pump-micro.js`
 * Environment: BENCH_MIB (1024), BENCH_FRAME_KIB (1024).
 */
const { spawn } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');

const native = require(path.join(__dirname, '..', 'native', 'build', 'Release', 'ferry_native.node'));

const MIB = 1024 * 1024;

const TICK_MS = 10;
const SAMPLE_MS = 50;

/** Fields of a /proc stat line after the command name; [11], [12] are utime, stime; [13], [14] cutime, cstime. */
function statFields(file) {
  const stat = fs.readFileSync(file, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** CPU seconds of this process's reaped children. */
function childrenCpuSeconds() {
  const fields = statFields('/proc/self/stat');
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** Last-seen CPU seconds of each thread that was not there at the start (the pump threads). */
function sampleNewThreads(known, seen) {
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (known.has(tid)) continue;
    try {
      const fields = statFields(`/proc/self/task/${tid}/stat`);
      seen.set(tid, (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // The thread ended between readdir and read: its last sample stands.
    }
  }
}

async function main() {
  const mib = Number(process.env.BENCH_MIB || 1024);
  const frameBytes = Number(process.env.BENCH_FRAME_KIB || 1024) * 1024;
  const key = randomBytes(32);
  const prefix = Buffer.from('ABCD');
  const [source, sourceChild] = native.socketpair();
  const [wireIn, wireOut] = native.socketpair();
  const sink = fs.openSync('/dev/null', 'w');

  const delay = monitorEventLoopDelay({ resolution: TICK_MS });
  delay.enable();
  const known = new Set(fs.readdirSync('/proc/self/task'));
  const pumpThreads = new Map();
  let lastTick = Date.now();
  let worstLateMs = 0;
  const ticker = setInterval(() => {
    const now = Date.now();
    worstLateMs = Math.max(worstLateMs, now - lastTick - TICK_MS);
    lastTick = now;
  }, TICK_MS);
  const sampler = setInterval(() => sampleNewThreads(known, pumpThreads), SAMPLE_MS);
  const childCpuBefore = childrenCpuSeconds();
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();

  const sealing = native.sealedPump(source, wireIn, 'seal', key, prefix, frameBytes, true, -1);
  const opening = native.sealedPump(wireOut, sink, 'open', key, prefix, frameBytes, false, -1);
  const child = spawn('dd', ['if=/dev/zero', 'bs=1M', `count=${mib}`, 'status=none'], { stdio: ['ignore', sourceChild, 'inherit'] });
  // The child has its copy; ours must go, or the seal pump never sees end of stream.
  native.close(sourceChild);
  const exited = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`dd exited with ${code}`))));
  });

  const [sealed, opened] = await Promise.all([sealing, opening, exited]);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  delay.disable();
  clearInterval(ticker);
  clearInterval(sampler);
  for (const fd of [source, wireIn, wireOut, sink]) native.close(fd);

  if (opened.bytesOut !== mib * MIB) throw new Error(`delivered ${opened.bytesOut} bytes, expected ${mib * MIB}`);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  console.log(`sealed pump: ${mib} MiB, frameBytes ${frameBytes / 1024} KiB, seal -> socketpair -> open`);
  console.log(`  wall        ${seconds.toFixed(2)} s  ->  ${(mib * MIB / 1e6 / seconds).toFixed(0)} MB/s (${(mib / seconds).toFixed(0)} MiB/s)`);
  console.log(`  this process CPU ${cpuSeconds.toFixed(2)} s (user ${(cpu.user / 1e6).toFixed(2)}, system ${(cpu.system / 1e6).toFixed(2)}) = ${(cpuSeconds / seconds).toFixed(2)} cores; ${(cpuSeconds / (mib / 1024)).toFixed(2)} CPU s per GiB`);
  const threads = [...pumpThreads.values()].map((s) => `${s.toFixed(2)} s`).join(', ');
  console.log(`  pump threads (sampled every ${SAMPLE_MS} ms, so a little low): ${threads || 'none seen'}`);
  console.log(`  dd (source) CPU ${(childrenCpuSeconds() - childCpuBefore).toFixed(2)} s`);
  console.log(`  frames: seal ${sealed.frames} (${(sealed.bytesIn / Math.max(1, sealed.frames - 1) / 1024).toFixed(0)} KiB average), open ${opened.frames}; wire bytes ${sealed.bytesOut}`);
  console.log(`  event loop: a ${TICK_MS} ms timer ran at most ${worstLateMs} ms late; monitorEventLoopDelay max ${(delay.max / 1e6).toFixed(1)} ms`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
