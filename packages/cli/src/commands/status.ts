import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { formatBytes, printJson, printTable } from '../output';
import { action } from './action';
import { publicResult } from './migrate';

export function registerStatus(program: Command): Command {
  return program
    .command('status')
    .description('show migrations, current and past (newest first), or one by id')
    .argument('[id]', 'migration id')
    .option('--json', 'print JSON (an array, or one object with an id)')
    .action(
      action(async (id: string | undefined, opts: { json?: boolean }) => {
        const { migrations } = await askCoordinator(CoordVerb.STATUS, id ? { id } : {});
        if (opts.json) return printJson(id ? publicResult(migrations[0]) : migrations.map(publicResult));
        printTable(
          ['ID', 'WORKLOAD', 'FROM', 'TO', 'STATE', 'STEP', 'DOWNTIME', 'TOTAL', 'BYTES', 'ERROR'],
          migrations.map((m) => [
            m.id,
            m.workload,
            m.from,
            m.to,
            m.state,
            m.step,
            `${m.downtimeMs} ms`,
            `${m.totalMs} ms`,
            formatBytes(m.bytesTransferred),
            m.error ? `${m.error.code}: ${m.error.message}` : '',
          ]),
        );
      }),
    );
}
