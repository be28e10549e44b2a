'use strict';
/**
 * What the bench reads of processes from /proc: CPU seconds, resident memory, the workload's own
 * processes, and (BENCH_THREADS) a per-thread CPU breakdown of a migration.
 *
 * CPU comes from /proc's utime and stime, not from a sampling profiler: on this VM kind the first
 * write to memory the host took back stalls in the host, and `perf` (cpu-clock) puts those stalls on
 * the instruction that waited, while the accounting here counts what the scheduler charged the task.
 */
const fs = require('node:fs');

const CLOCK_TICKS_PER_S = 100;

/** The fields of /proc/PID/stat after the command name (proc(5) field 3 is index 0), or null when gone. */
function statFields(file) {
  try {
    const stat = fs.readFileSync(file, 'utf8');
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), fields: stat.slice(stat.lastIndexOf(')') + 2).split(' ') };
  } catch {
    return null;
  }
}

/** utime+stime (+cutime+cstime with `withChildren`: children count once reaped, CRIU runs as one). */
function cpuSeconds(pid, withChildren = true) {
  const stat = statFields(`/proc/${pid}/stat`);
  if (!stat) return 0;
  // Fields 14-17 of proc(5), counted from the state field (3) here.
  return stat.fields.slice(11, withChildren ? 15 : 13).reduce((s, f) => s + Number(f), 0) / CLOCK_TICKS_PER_S;
}

/**
 * Peak-RSS bookkeeping for the agents: `5` into clear_refs resets a process's VmHWM to its current
 * RSS (proc(5)), so the peak read after a migration is that migration's, not an earlier one's.
 */
function resetPeakRss(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // An older kernel: the peak then covers the agent's whole life, an upper bound.
  }
}

/** VmRSS and VmHWM of a process, in bytes (0 when it is gone). */
function rssOf(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (name) => Number((new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status) ?? [])[1] ?? 0) * 1024;
    return { rss: kib('VmRSS'), peak: kib('VmHWM') };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

/**
 * CPU seconds of the live processes whose command line has `arg` as one of its words (the bench's
 * workload names its heartbeat file): after a migration, the restored tree's whole life. That is
 * where CRIU's restore fills a process's memory (its restorer runs in the restored process), work
 * that ferry's lazy restore does in CRIU's lazy-pages daemon, a child of the agent and counted there.
 */
function cpuOfProcessesWithArg(arg) {
  let total = 0;
  for (const pid of fs.readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(arg)) total += cpuSeconds(pid, false);
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/**
 * Samples, every `intervalMs`, the CPU of every thread of the processes `roots` (the agents and
 * nats-server, the agents' native threads among them), keeping each thread's last value: a thread
 * that ends between two samples loses at most one interval. Their children (CRIU) are counted
 * whole once reaped, from the roots' cutime and cstime. `stop()` returns the CPU seconds of each
 * process:thread name since the start, largest first.
 */
function sampleThreadCpu(roots, intervalMs = 50) {
  const threads = new Map(); // "pid/tid" -> { name, first, last }
  const childTicks = () => roots.reduce((sum, pid) => sum + (statFields(`/proc/${pid}/stat`)?.fields.slice(13, 15).reduce((s, f) => s + Number(f), 0) ?? 0), 0);
  const childrenBefore = childTicks();
  let started = false;
  const sample = () => {
    for (const pid of roots) {
      const comm = statFields(`/proc/${pid}/stat`)?.comm;
      let tids = [];
      try {
        tids = fs.readdirSync(`/proc/${pid}/task`);
      } catch {
        continue;
      }
      for (const tid of tids) {
        const stat = statFields(`/proc/${pid}/task/${tid}/stat`);
        if (!stat) continue;
        const ticks = Number(stat.fields[11]) + Number(stat.fields[12]);
        const seen = threads.get(`${pid}/${tid}`);
        if (seen) seen.last = ticks;
        // A thread first seen after the start started since: all its CPU counts.
        else threads.set(`${pid}/${tid}`, { name: `${comm}:${stat.comm}`, first: started ? 0 : ticks, last: ticks });
      }
    }
  };
  sample();
  started = true;
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      const byName = new Map([['reaped children (CRIU and the commands the agents run)', (childTicks() - childrenBefore) / CLOCK_TICKS_PER_S]]);
      for (const t of threads.values()) byName.set(t.name, (byName.get(t.name) ?? 0) + (t.last - t.first) / CLOCK_TICKS_PER_S);
      return [...byName].filter(([, seconds]) => seconds > 0).sort((a, b) => b[1] - a[1]);
    },
  };
}

module.exports = { cpuOfProcessesWithArg, cpuSeconds, resetPeakRss, rssOf, sampleThreadCpu };
