import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import {
  CoordVerb,
  EXIT_CODES,
  MigrationEvent,
  decode,
  isErrorCode,
  parseMessage,
  requestCoordVerb,
  subjects,
  type MigrationResult,
  type RestoreMode,
  type TransportPreference,
} from '@ferry/protocol';
import { connectCluster } from '../client';
import { formatBytes, printable, printJson } from '../output';
import { action } from './action';
import { ProgressLine } from '../progress-line';

/** A migration can take long (a big workload over a slow link); the CLI waits for its end. */
const MIGRATE_TIMEOUT_MS = 60 * 60_000;

/** The shape scripts rely on (see the README's CLI contract). */
export function publicResult(m: MigrationResult) {
  return {
    id: m.id,
    workload: m.workload,
    from: m.from,
    to: m.to,
    state: m.state,
    downtimeMs: m.downtimeMs,
    totalMs: m.totalMs,
    bytesTransferred: m.bytesTransferred,
    transport: m.transport,
    ...(m.memory ? { memory: m.memory } : {}),
    ...(m.localDirs ? { localDirs: m.localDirs } : {}),
    ...(m.precopyBytes !== undefined ? { precopyBytes: m.precopyBytes } : {}),
    restore: m.restore ?? 'eager',
    phases: m.phases,
    pid: m.pid,
    requestedAt: m.requestedAt,
    finishedAt: m.finishedAt,
    ...(m.placement ? { placement: m.placement } : {}),
    ...(m.error ? { error: m.error } : {}),
  };
}

export function registerMigrate(program: Command): Command {
  return program
    .command('migrate')
    .description('live-migrate a workload to another host; waits for the end (exit 0 only when it succeeded)')
    .argument('<name>', 'workload name')
    .option('--to <host>', 'target host; without it the coordinator picks one and says why (placement: {host, reason})')
    .option(
      '--restore <mode>',
      'eager (all memory in place before the workload runs), lazy (runs first, memory filled behind it from the received image) or ' +
        'post-copy (runs as soon as all but its memory has arrived; the memory follows from the source, which keeps its frozen copy until the last page); default lazy where the target supports it',
    )
    .option(
      '--transport <mode>',
      'data path: auto (memory sealed onto direct TCP while CRIU dumps where both hosts can stream, else the page tunnel or the dumped image; NATS when the hosts do not reach each other), ' +
        'direct, nats (through nats-server only), page-tunnel or page-server',
      'auto',
    )
    .option('--precopy <mode>', 'auto (copy the memory across while the workload runs, then only what changed while it is frozen; where both hosts can and it holds 32 MiB or more) or off')
    .option('--request-id <id>', 'idempotency key: retrying with the same id never starts a second migration')
    .option('--json', 'print {id, workload, from, to, state, downtimeMs, totalMs, bytesTransferred, phases, ...}')
    .action(
      // transport and restore as typed (unchecked here): the coordinator validates them.
      action(async (name: string, opts: { to?: string; requestId?: string; json?: boolean; transport: TransportPreference; restore?: RestoreMode; precopy?: 'auto' | 'off' }) => {
        const nc = await connectCluster();
        const showProgress = !opts.json && process.stderr.isTTY;
        const bar = showProgress ? new ProgressLine(process.stderr) : null;
        let migrationId = '';
        let total = 0;
        const subs = bar
          ? [
              nc.subscribe(subjects.event('migration'), {
                callback: (err, msg) => {
                  if (err) return;
                  try {
                    const ev = parseMessage(MigrationEvent, decode(msg.data));
                    if (ev.workload !== name) return;
                    migrationId = ev.migrationId;
                    total = ev.bytesTotal ?? total;
                    bar.update(`${ev.step}`, ev.bytesTransferred ?? 0, total);
                  } catch {
                    // Not ours to judge; the coordinator validates what matters.
                  }
                },
              }),
              nc.subscribe(subjects.allProgress(), {
                callback: (err, msg) => {
                  if (err) return;
                  try {
                    const p = decode(msg.data) as { migrationId?: string; bytes?: number };
                    if (p.migrationId === migrationId && typeof p.bytes === 'number') bar.update('transferring', p.bytes, total);
                  } catch {
                    // ignore
                  }
                },
              }),
            ]
          : [];
        try {
          const { migration } = await requestCoordVerb(
            nc,
            CoordVerb.MIGRATE,
            {
              workload: name,
              ...(opts.to ? { to: opts.to } : {}),
              requestId: opts.requestId ?? `r-${randomBytes(8).toString('hex')}`,
              transport: opts.transport,
              ...(opts.restore ? { restore: opts.restore } : {}),
              ...(opts.precopy ? { precopy: opts.precopy } : {}),
            },
            { timeoutMs: MIGRATE_TIMEOUT_MS },
          );
          bar?.done();
          if (opts.json) printJson(publicResult(migration));
          else {
            const m = migration;
            process.stdout.write(
              `${m.workload}: ${m.from} -> ${m.to} ${m.state} (id ${m.id})\n` +
                `  downtime ${m.downtimeMs} ms, total ${m.totalMs} ms, ${formatBytes(m.bytesTransferred)} over ${m.transport}\n` +
                (m.phases.precopyMs ? `  memory pre-copied in ${m.phases.precopyMs} ms (${formatBytes(m.precopyBytes ?? 0)}) while it ran\n` : '') +
                `  dump ${m.phases.dumpMs} ms, transfer ${m.phases.transferMs} ms, restore ${m.phases.restoreMs} ms` +
                `${m.phases.pullMs ? `, memory in place ${m.phases.pullMs} ms after the resume` : ''}\n` +
                (m.placement ? `  placed on ${printable(m.placement.reason)}\n` : '') +
                (m.error ? `  error ${m.error.code}: ${printable(m.error.message)}\n` : ''),
            );
          }
          if (migration.state === 'succeeded') return 0;
          return migration.error && isErrorCode(migration.error.code) ? EXIT_CODES[migration.error.code] : 1;
        } finally {
          bar?.done();
          for (const s of subs) s.unsubscribe();
          await nc.close();
        }
      }),
    );
}
