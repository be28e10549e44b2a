'use strict';
/**
 * The bench's report: each round's rows as ratios against that round's CRIU row and ceilings (side
 * by side, the only comparison this shared machine allows), the median of each over the rounds,
 * and the fast-data-path goals (issue #15) checked against those medians.
 */
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** The reference rows, by their BENCH_METHODS names. */
const CRIU = 'criu';
const CRIU_KEPT = 'criu-kept';

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

/** The median of the finite values, NaN when there is none. */
function median(values) {
  const xs = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 === 1 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

const perGiB = (r) => (r && r.bytes > 0 ? r.cpu / (r.bytes / GIB) : NaN);

/** One round's row with its ratios against the same round's CRIU row and ceilings. */
function withRatios(row, rowsOfRound, ceilings) {
  const criu = rowsOfRound.find((x) => x.mib === row.mib && x.key === CRIU);
  return {
    ...row,
    cpuPerGiB: perGiB(row),
    vsCriuDowntime: criu ? row.downtimeMs / criu.downtimeMs : NaN,
    vsCriuCpu: criu ? perGiB(row) / perGiB(criu) : NaN,
    vsTcp: row.mbps / ceilings.tcp.mbps,
    vsNats: row.mbps / ceilings.nats.mbps,
    pullVsTcp: row.pullMbps !== undefined ? row.pullMbps / ceilings.tcp.mbps : undefined,
    pullVsFresh: row.pullMbps !== undefined ? row.pullMbps / ceilings.fresh.mbps : undefined,
  };
}

const MEDIAN_FIELDS = ['downtimeMs', 'mbps', 'totalMs', 'cpu', 'cpuPerGiB', 'vsCriuDowntime', 'vsCriuCpu', 'vsTcp', 'vsNats', 'pullMbps', 'pullVsTcp', 'pullVsFresh'];

/**
 * `rounds`: [{ ceilings, rows }], each row with `key` (its BENCH_METHODS name) and `method` (its
 * label). Returns the median row of each (size, key), sizes ascending and keys in the order first
 * seen, with `rounds` (how many measured it), `downtimeRange` and the largest RSS growth seen.
 */
function summarize(rounds) {
  const all = rounds.flatMap(({ ceilings, rows }, round) => rows.map((row) => ({ ...withRatios(row, rows, ceilings), round })));
  const keys = [];
  for (const r of all) if (!keys.some((k) => k.mib === r.mib && k.key === r.key)) keys.push({ mib: r.mib, key: r.key });
  keys.sort((a, b) => a.mib - b.mib);
  return keys.map(({ mib, key }) => {
    const runs = all.filter((r) => r.mib === mib && r.key === key);
    const ok = runs.filter((r) => Number.isFinite(r.downtimeMs));
    const out = { mib, key, method: (ok[0] ?? runs[0]).method, runs, rounds: ok.length };
    for (const field of MEDIAN_FIELDS) out[field] = median(runs.map((r) => r[field]));
    const downtimes = runs.map((r) => r.downtimeMs).filter(Number.isFinite);
    out.downtimeRange = downtimes.length ? [Math.min(...downtimes), Math.max(...downtimes)] : undefined;
    const rss = runs.map((r) => r.rssGrowth).filter(Number.isFinite);
    out.rssGrowth = rss.length ? Math.max(...rss) : undefined;
    return out;
  });
}

function summarizeCeilings(rounds) {
  const m = (get) => median(rounds.map(({ ceilings }) => get(ceilings)));
  return {
    tcp: { mbps: m((c) => c.tcp.mbps), cpuPerGiB: m((c) => c.tcp.cpuPerGiB) },
    nats: { mbps: m((c) => c.nats.mbps), cpuPerGiB: m((c) => c.nats.cpuPerGiB) },
    fresh: { mbps: m((c) => c.fresh.mbps), rewriteMbps: m((c) => c.fresh.rewriteMbps) },
    perRound: rounds.map(({ ceilings }) => ceilings),
  };
}

function ceilingsText(c, streamBytes) {
  const rounds = c.perRound;
  const list = (get) => rounds.map((x) => fmt(get(x))).join(' / ');
  return (
    `Ceilings on the same path (${streamBytes / MIB} MiB, h1 -> h2; medians of ${rounds.length} round${rounds.length === 1 ? '' : 's'}, each round's in brackets): ` +
    `one raw TCP stream ${fmt(c.tcp.mbps)} MB/s [${list((x) => x.tcp.mbps)}] (${fmt(c.tcp.cpuPerGiB, 2)} CPU s/GiB, both ends); ` +
    `bare NATS pub/sub through nats-server ${fmt(c.nats.mbps)} MB/s [${list((x) => x.nats.mbps)}], the faster of 1 MiB messages 32 in flight and ` +
    `4 MiB messages 8 in flight (${fmt(c.nats.cpuPerGiB, 2)} CPU s/GiB: both clients and nats-server, the connections TLS as the agents' are). ` +
    `One thread writing memory it never wrote before ${fmt(c.fresh.mbps)} MB/s (rewriting it ${fmt(c.fresh.rewriteMbps)} MB/s): ` +
    `the ceiling of post-copy's pull, CRIU's lazy-pages daemon filling the workload's memory from one thread.`
  );
}

function table(summary) {
  const lines = [
    '| workload | method | rounds | downtime ms | (range) | vs CRIU page-server | transfer MB/s | vs raw TCP | vs NATS ceiling | total s | CPU s | CPU s/GiB | vs CRIU | agent RSS + MiB (max) |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of summary) {
    const range = r.downtimeRange ? `${fmt(r.downtimeRange[0])}-${fmt(r.downtimeRange[1])}` : '-';
    lines.push(
      `| ${r.mib} MiB | ${r.method} | ${r.rounds} | ${fmt(r.downtimeMs)} | ${range} | ${fmt(r.vsCriuDowntime, 2)} | ${fmt(r.mbps)} | ${fmt(r.vsTcp, 2)} | ` +
        `${fmt(r.vsNats, 2)} | ${fmt(r.totalMs / 1000, 2)} | ${fmt(r.cpu, 2)} | ${fmt(r.cpuPerGiB, 2)} | ${fmt(r.vsCriuCpu, 2)} | ${r.rssGrowth !== undefined ? fmt(r.rssGrowth / MIB) : '-'} |`,
    );
  }
  return lines.join('\n');
}

/**
 * The goals of issue #15 against the medians, at the sizes they name (512 MiB and 1 GiB) where
 * CRIU's row ran: each line says the goal, what was measured, and whether it holds.
 */
function goals(summary) {
  const row = (mib, key) => summary.find((r) => r.mib === mib && r.key === key && r.rounds > 0);
  const sizes = [512, 1024].filter((mib) => row(mib, CRIU));
  if (sizes.length === 0) return '';
  const lines = ['Goals (issue #15), on the medians above:', ''];
  const check = (goal, values, holds) => {
    const measured = values.filter((v) => v.value !== undefined && Number.isFinite(v.value));
    if (measured.length === 0) return;
    const ok = measured.every((v) => holds(v.value));
    lines.push(`- ${ok ? 'holds' : 'NOT held'}: ${goal}: ${measured.map((v) => `${v.label} ${fmt(v.value, 2)}`).join(', ')}`);
  };
  const at = (key, field) => sizes.map((mib) => ({ label: `${mib} MiB`, value: row(mib, key)?.[field] }));
  check('default downtime <= 0.5x CRIU page-server', at('ferry-auto', 'vsCriuDowntime'), (v) => v <= 0.5);
  check('--transport direct >= 0.7x raw TCP', at('ferry', 'vsTcp'), (v) => v >= 0.7);
  check('--transport nats >= 0.8x bare NATS', at('ferry-nats', 'vsNats'), (v) => v >= 0.8);
  check('post-copy downtime <= 0.25x CRIU page-server', at('ferry-postcopy', 'vsCriuDowntime'), (v) => v <= 0.25);
  check('post-copy pull >= 0.5x raw TCP', at('ferry-postcopy', 'pullVsTcp'), (v) => v >= 0.5);
  const ferryRows = summary.filter((r) => sizes.includes(r.mib) && r.key.startsWith('ferry') && r.rounds > 0);
  check('CPU per GiB <= 2x CRIU page-server, every ferry row', ferryRows.map((r) => ({ label: `${r.mib} MiB ${r.method}`, value: r.vsCriuCpu })), (v) => v <= 2);
  const kept = (mib) => row(mib, CRIU_KEPT);
  if (sizes.every(kept)) {
    check(
      'the same against CRIU with its source kept until restored (not the goal\'s reference: how two hosts would compare)',
      ferryRows.map((r) => ({ label: `${r.mib} MiB ${r.method}`, value: r.cpuPerGiB / kept(r.mib).cpuPerGiB })),
      (v) => v <= 2,
    );
  }
  check('agent RSS growth <= 256 MiB at 1 GiB', ferryRows.filter((r) => r.mib === 1024).map((r) => ({ label: r.method, value: r.rssGrowth / MIB })), (v) => v <= 256);
  if (sizes.length === 2) {
    const growth = (prefix) => row(1024, prefix).downtimeMs / row(512, prefix).downtimeMs;
    const criuGrowth = growth(CRIU);
    check(
      `downtime growth 1 GiB / 512 MiB no faster than CRIU's (${fmt(criuGrowth, 2)})`,
      ['ferry-auto', 'ferry-postcopy'].filter((k) => row(512, k) && row(1024, k)).map((k) => ({ label: row(1024, k).method, value: growth(k) })),
      (v) => v <= criuGrowth,
    );
  }
  return lines.join('\n');
}

function details(summary) {
  return [
    'Details (each round):',
    ...summary.flatMap((r) =>
      r.runs.map(
        (x) =>
          `- ${x.mib} MiB ${x.method}, round ${x.round + 1}: ${x.detail}${x.reportedDowntimeMs !== undefined ? `; ferry-reported downtime ${x.reportedDowntimeMs} ms` : ''}` +
          `${x.pullVsTcp !== undefined ? `; pull vs raw TCP ${fmt(x.pullVsTcp, 2)}, vs fresh memory ${fmt(x.pullVsFresh, 2)}` : ''}`,
      ),
    ),
  ].join('\n');
}

/** The local-dir row: the first pass's rate against raw TCP, and the downtime with a full and an empty dir. */
function localDirTable(r, tcp) {
  if (r === undefined) return '';
  if (r.failed) return `Local dir (ferry run --local-dir): FAILED: ${r.failed}`;
  return [
    `Local dir (\`ferry run --local-dir\`, a 64 MiB workload, default path, once): the first pass copies the dir while the workload runs; the freeze carries only what changed.`,
    '',
    '| local dir | first pass ms | copy MB/s | vs raw TCP | downtime ms | downtime with an empty dir ms | ratio |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${r.dirMib} MiB | ${fmt(r.full.localDirMs)} | ${fmt(r.mbps)} | ${(r.mbps / tcp.mbps).toFixed(2)} | ${fmt(r.full.downtimeMs)} | ${fmt(r.empty.downtimeMs)} | ${(r.full.downtimeMs / r.empty.downtimeMs).toFixed(2)} |`,
  ].join('\n');
}

/** The whole report: ceilings, the table, the goals, the local-dir row and each round's details. */
function report(rounds, localDir, streamBytes) {
  const summary = summarize(rounds);
  const ceilings = summarizeCeilings(rounds);
  return [ceilingsText(ceilings, streamBytes), table(summary), goals(summary), localDirTable(localDir, ceilings.tcp), details(summary)].filter(Boolean).join('\n\n');
}

module.exports = { fmt, median, report, summarize };
