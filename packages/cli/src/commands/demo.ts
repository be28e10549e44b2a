import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CoordVerb } from '@ferry/protocol';
import { clusterDataDir, dev, startLocalCluster } from '@ferry/dev-cluster';
import { askCoordinator } from '../client';
import { formatBytes } from '../output';
import { action } from './action';
import { publicResult } from './migrate';

const DEMO_WORKLOAD = 'demo';
/** A counter that prints once a second: its log shows the count carrying on across the move. */
const DEMO_ARGV = ['/bin/sh', '-c', 'i=0; while :; do i=$((i+1)); echo "tick $i on $(hostname)"; sleep 1; done'];

const say = (s: string) => process.stdout.write(`${s}\n`);

async function lastLogLine(): Promise<string> {
  const text = await readFile(join(clusterDataDir('ferry'), 'workloads', DEMO_WORKLOAD, 'output.log'), 'utf8').catch(() => '');
  return text.trim().split('\n').pop() ?? '';
}

export function registerDemo(program: Command): Command {
  return program
    .command('demo')
    .description('bring up the local cluster (if needed), run a counter on h1 and live-migrate it to h2 (or back)')
    .option('--json', 'print the migration result as JSON')
    .action(
      action(async (opts: { json?: boolean }) => {
        const state = dev.readClusterState('ferry');
        if (!state || state.status !== 'running' || !state.processes.some(dev.isProcessAlive)) {
          say('ferry: starting the local cluster (2 hosts)...');
          await startLocalCluster({ name: 'ferry', hosts: 2 });
        } else {
          say('ferry: the local cluster is already up');
        }
        const ps = () => askCoordinator(CoordVerb.PS, {});
        let demo = (await ps()).workloads.find((w) => w.name === DEMO_WORKLOAD && w.state === 'running');
        if (!demo) {
          const { workload } = await askCoordinator(
            CoordVerb.RUN,
            { host: 'h1', name: DEMO_WORKLOAD, argv: DEMO_ARGV, env: {} },
            20_000,
          );
          demo = workload;
          say(`ferry: launched '${DEMO_WORKLOAD}' on h1 (pid ${demo.pid}): ${DEMO_ARGV.join(' ')}`);
          await new Promise((r) => setTimeout(r, 3_000));
        }
        const to = demo.host === 'h1' ? 'h2' : 'h1';
        say(`ferry: before: ${await lastLogLine()}`);
        say(`ferry: live-migrating '${DEMO_WORKLOAD}' ${demo.host} -> ${to} ...`);
        const { migration } = await askCoordinator(
          CoordVerb.MIGRATE,
          { workload: DEMO_WORKLOAD, to },
          10 * 60_000,
        );
        if (opts.json) say(JSON.stringify(publicResult(migration), null, 2));
        else {
          say(`ferry: ${migration.state}: downtime ${migration.downtimeMs} ms, total ${migration.totalMs} ms, ${formatBytes(migration.bytesTransferred)} moved`);
          say(`       dump ${migration.phases.dumpMs} ms, transfer ${migration.phases.transferMs} ms, restore ${migration.phases.restoreMs} ms`);
          if (migration.error) say(`       error ${migration.error.code}: ${migration.error.message}`);
        }
        await new Promise((r) => setTimeout(r, 2_000));
        const after = (await ps()).workloads.find((w) => w.name === DEMO_WORKLOAD);
        say(`ferry: after: '${DEMO_WORKLOAD}' runs on ${after?.host} (pid ${after?.pid}); its log goes on: ${await lastLogLine()}`);
        say('ferry: try `npx ferry ps`, `npx ferry hosts`, `npx ferry migrate demo --to h1`, and `npx ferry dev down` to remove it all.');
        const http = dev.readClusterState('ferry')?.http;
        if (http?.url) say(`ferry: the dashboard is at ${http.url}/; sign in with the token in ${http.operatorTokenFile} (or ${http.viewerTokenFile} to only watch).`);
        return migration.state === 'succeeded' ? 0 : 1;
      }),
    );
}
