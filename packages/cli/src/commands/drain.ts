import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import {
  CoordVerb,
  DrainEvent,
  EXIT_CODES,
  decode,
  isErrorCode,
  parseMessage,
  requestCoordVerb,
  subjects,
  type DrainSummary,
  type RestoreMode,
  type TransportPreference,
} from '@ferry/protocol';
import { connectCluster } from '../client';
import { printable } from '../output';
import { ProgressLine } from '../progress-line';
import { action } from './action';
import { publicResult } from './migrate';

/** A drain of many big workloads can take long; the CLI follows it to the end. */
const DRAIN_TIMEOUT_MS = 6 * 60 * 60_000;

/**
 * `ferry drain HOST`: cordons HOST and moves every workload off it (the coordinator places each
 * and keeps to its per-host limits). Prints each result as it completes; with --json one JSON
 * object per line: `{"kind":"result","migration":{...}}` or `{"kind":"unplaced","workload","error"}`,
 * then `{"kind":"done","summary":{host,total,succeeded,failed,unplaced,totalMs}}`.
 * Exit 0 when every workload moved.
 */
export function registerDrain(program: Command): Command {
  return program
    .command('drain')
    .description('cordon a host and live-migrate every workload off it; prints each result as it completes')
    .argument('<host>', 'host to empty')
    .option('--restore <mode>', 'for every migration, as in `ferry migrate`: eager, lazy or post-copy (fastest; the workloads depend on this host until their memory has moved)')
    .option('--transport <mode>', 'for every migration, as in `ferry migrate`: auto, direct, nats or page-server', 'auto')
    .option('--json', 'one JSON line per result ({kind: "result", migration} or {kind: "unplaced", workload, error}), then {kind: "done", summary}')
    .action(
      // restore and transport as typed (unchecked here): the coordinator validates them.
      action(async (host: string, opts: { json?: boolean; restore?: RestoreMode; transport: TransportPreference }) => {
        const nc = await connectCluster();
        const drainId = `d-${randomBytes(8).toString('hex')}`;
        const line = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
        // On a terminal (not with --json) a bar on stderr counts the workloads done; results print above it.
        const bar = !opts.json && process.stderr.isTTY ? new ProgressLine(process.stderr) : null;
        let planned = 0;
        let finished = 0;
        const say = (text: string) => {
          bar?.done();
          process.stdout.write(`${printable(text)}\n`);
          bar?.updateCount(`drain ${host}`, finished, planned);
        };
        let failureCode = 0;
        let resolveDone: (s: DrainSummary) => void = () => undefined;
        const done = new Promise<DrainSummary>((r) => (resolveDone = r));
        // Subscribed before asking, so no result can come before we listen.
        const sub = nc.subscribe(subjects.event('drain'), {
          callback: (err, msg) => {
            if (err) return;
            let ev: DrainEvent;
            try {
              ev = parseMessage(DrainEvent, decode(msg.data));
            } catch {
              return;
            }
            if (ev.drainId !== drainId) return;
            if (ev.kind === 'result') {
              const m = ev.migration;
              if (m.state !== 'succeeded' && failureCode === 0) failureCode = m.error && isErrorCode(m.error.code) ? EXIT_CODES[m.error.code] : 1;
              finished += 1;
              if (opts.json) line({ kind: 'result', migration: publicResult(m) });
              else say(`${m.workload}: ${m.from} -> ${m.to} ${m.state}${m.error ? ` (${m.error.code}: ${m.error.message})` : ` in ${m.totalMs} ms, downtime ${m.downtimeMs} ms`}`);
            } else if (ev.kind === 'unplaced') {
              if (failureCode === 0) failureCode = isErrorCode(ev.error.code) ? EXIT_CODES[ev.error.code] : 1;
              finished += 1;
              if (opts.json) line({ kind: 'unplaced', workload: ev.workload, error: ev.error });
              else say(`${ev.workload}: not moved (${ev.error.code}: ${ev.error.message})`);
            } else {
              if (opts.json) line({ kind: 'done', summary: ev.summary });
              resolveDone(ev.summary);
            }
          },
        });
        try {
          await nc.flush();
          const plan = await requestCoordVerb(nc, CoordVerb.DRAIN, { host, drainId, transport: opts.transport, ...(opts.restore ? { restore: opts.restore } : {}) }, { timeoutMs: 15_000 });
          planned = plan.workloads.length;
          if (!opts.json) say(`${host} cordoned; moving ${plan.workloads.length} workload(s): ${plan.workloads.join(', ') || '(none)'}`);
          const timeout = new Promise<never>((_r, reject) => setTimeout(() => reject(new Error(`drain of ${host} not finished within ${DRAIN_TIMEOUT_MS} ms`)), DRAIN_TIMEOUT_MS).unref());
          const summary = await Promise.race([done, timeout]);
          bar?.done();
          if (!opts.json) {
            process.stdout.write(`drained ${host}: ${summary.succeeded}/${summary.total} moved, ${summary.failed} failed, ${summary.unplaced} not placed, ${summary.totalMs} ms\n`);
          }
          return summary.succeeded === summary.total ? 0 : failureCode || 1;
        } finally {
          bar?.done();
          sub.unsubscribe();
          await nc.close();
        }
      }),
    );
}
