import type { Command } from 'commander';
import { CoordVerb, LifecycleEvent, decode, parseMessage, subjects } from '@ferry/protocol';
import { askCoordinator, connectCluster } from '../client';
import { printable, printJson } from '../output';
import { action } from './action';

/** One line per event: time, type, step, key, then the ids and figures present. */
function formatEvent(ev: LifecycleEvent): string {
  const parts = [ev.at, ev.type.padEnd(9), ev.step.padEnd(16), ev.key];
  if (ev.migrationId) parts.push(ev.migrationId);
  if (ev.from && ev.to) parts.push(`${ev.from}->${ev.to}`);
  if (ev.requestId) parts.push(`request=${ev.requestId}`);
  for (const [k, v] of Object.entries(ev.figures)) parts.push(`${k}=${v}`);
  if (ev.error) parts.push(`${ev.error.code}: ${ev.error.message}`);
  return parts.join('  ');
}

export function registerEvents(program: Command): Command {
  return program
    .command('events')
    .description('lifecycle events (migrations, hosts, requests, drains): the most recent ones the coordinator kept, oldest first')
    .option('--follow', 'after the recent ones, print new events as they happen (until interrupted)')
    .option('--limit <n>', 'how many recent events to print (the coordinator keeps the last 1000)', (v) => Number(v), 100)
    .option('--json', 'print JSON: an array, or with --follow one JSON document per line')
    .action(
      action(async (opts: { follow?: boolean; json?: boolean; limit: number }) => {
        const ask = () => askCoordinator(CoordVerb.EVENTS, { limit: opts.limit });
        const print = (ev: LifecycleEvent) => process.stdout.write(`${opts.json ? JSON.stringify(ev) : printable(formatEvent(ev))}\n`);
        if (!opts.follow) {
          const { events } = await ask();
          if (opts.json) return printJson(events);
          for (const ev of events) print(ev);
          return;
        }
        // Subscribe first, then fetch the recent ones: an event in between is in both, printed once.
        const nc = await connectCluster();
        const early: LifecycleEvent[] = [];
        let live = false;
        const printed = new Set<string>();
        const sub = nc.subscribe(subjects.event('lifecycle'), {
          callback: (err, msg) => {
            if (err) return;
            try {
              const ev = parseMessage(LifecycleEvent, decode(msg.data));
              if (live) print(ev);
              else early.push(ev);
            } catch {
              // Not ours to judge: skip what does not parse.
            }
          },
        });
        await nc.flush();
        const { events } = await ask();
        for (const ev of events) {
          printed.add(JSON.stringify(ev));
          print(ev);
        }
        for (const ev of early) if (!printed.has(JSON.stringify(ev))) print(ev);
        live = true;
        await new Promise<void>((resolve) => {
          const stop = () => resolve();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          void nc.closed().then(stop);
        });
        sub.unsubscribe();
        await nc.close();
      }),
    );
}
