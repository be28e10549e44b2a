import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { formatBytes, printJson, printTable } from '../output';
import { action } from './action';

export function registerPs(program: Command): Command {
  return program
    .command('ps')
    .description('list workloads across the cluster')
    .option(
      '--json',
      'print a JSON array of {name, host, state, pid, rssBytes, address?, localDirs, user?, ownRoot, ownNetwork} (address: the service address, for workloads run with --address; localDirs: those run with --local-dir; user: the user of one run with --user; ownRoot: false for one run with --host-root; ownNetwork: true for one run with --user and --address, in a network namespace of its own)',
    )
    .action(
      action(async (opts: { json?: boolean }) => {
        const { workloads } = await askCoordinator(CoordVerb.PS, {});
        if (opts.json) {
          return printJson(
            workloads.map((w) => ({
              name: w.name,
              host: w.host,
              state: w.state,
              pid: w.pid,
              rssBytes: w.rssBytes,
              ...(w.address ? { address: w.address } : {}),
              localDirs: w.localDirs ?? [],
              ...(w.user ? { user: w.user.name } : {}),
              ownRoot: w.ownRoot === true,
              ownNetwork: w.ownNetwork === true,
            })),
          );
        }
        printTable(
          ['NAME', 'HOST', 'STATE', 'PID', 'RSS', 'ADDRESS', 'LOCAL DIRS', 'COMMAND'],
          workloads.map((w) => [w.name, w.host, w.state, w.pid, formatBytes(w.rssBytes), w.address ?? '-', (w.localDirs ?? []).join(',') || '-', w.argv.join(' ')]),
        );
      }),
    );
}
