import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { formatBytes, printJson, printTable } from '../output';
import { action } from './action';
import { registerHostsAdd } from './hosts-add';
import { registerHostsRemove } from './hosts-remove';

/** `ferry hosts [--json]` lists hosts; `ferry hosts add|remove` bootstrap and remove agents over SSH. */
export function registerHosts(program: Command): Command {
  const hosts = program
    .command('hosts')
    .description('list hosts: state (alive/lost), cordoned, address, CRIU probe')
    .option('--json', 'print a JSON array of {name, state, cordoned, address, criu, memory, workloadCount}')
    .action(
      action(async (opts: { json?: boolean }) => {
        const { hosts } = await askCoordinator(CoordVerb.HOSTS, {});
        if (opts.json) return printJson(hosts);
        printTable(
          ['NAME', 'STATE', 'CORDONED', 'ADDRESS', 'CRIU', 'AVAILABLE', 'WORKLOADS'],
          hosts.map((h) => [
            h.name,
            h.state,
            h.cordoned ? 'yes' : 'no',
            h.address,
            h.criu.usable ? `${h.criu.version}${h.criu.needsFaultInjection ? ' (no hw breakpoints)' : ''}` : `unusable: ${h.criu.problem ?? ''}`,
            formatBytes(h.memory.availableBytes),
            h.workloadCount,
          ]),
        );
      }),
    );
  // `hosts add NAME --json` must give --json to `add`, not to the list command (the program enables it too).
  hosts.enablePositionalOptions();
  registerHostsAdd(hosts);
  registerHostsRemove(hosts);
  return hosts;
}
