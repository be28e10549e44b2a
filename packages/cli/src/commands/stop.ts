import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { printJson } from '../output';
import { action } from './action';

export function registerStop(program: Command): Command {
  return program
    .command('stop')
    .description('kill a workload (its whole PID namespace) and forget it')
    .argument('<name>', 'workload name')
    .option('--json', 'print {stopped: NAME}')
    .action(
      action(async (name: string, opts: { json?: boolean }) => {
        await askCoordinator(CoordVerb.STOP, { name }, 15_000);
        if (opts.json) return printJson({ stopped: name });
        process.stdout.write(`${name} stopped\n`);
      }),
    );
}
