import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { printJson } from '../output';
import { action } from './action';

/** `ferry cordon HOST` and `ferry uncordon HOST`: a cordoned host is never a migration target. */
export function registerCordon(program: Command): Command {
  for (const [verb, cordoned] of [[CoordVerb.CORDON, true], [CoordVerb.UNCORDON, false]] as const) {
    program
      .command(verb)
      .description(cordoned ? 'mark a host unschedulable: no migration or placement targets it (its workloads keep running)' : 'make a cordoned host a migration target again')
      .argument('<host>', 'host name')
      .option('--json', 'print the host: {name, state, cordoned, address, criu, memory, workloadCount}')
      .action(
        action(async (host: string, opts: { json?: boolean }) => {
          const reply = await askCoordinator(verb, { host });
          if (opts.json) return printJson(reply.host);
          process.stdout.write(`${host} ${reply.host.cordoned ? 'cordoned' : 'uncordoned'}\n`);
        }),
      );
  }
  return program;
}
