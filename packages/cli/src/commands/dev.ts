import type { Command } from 'commander';
import { dev as devCluster, startLocalCluster, startLocalHost, stopLocalCluster } from '@ferry/dev-cluster';
import { bootstrapDevHosts } from '../dev-bootstrap';
import { printJson } from '../output';
import { action } from './action';

const DEV_CLUSTER = 'ferry';

export function registerDev(program: Command): Command {
  const dev = program.command('dev').description('a local cluster on this machine: hosts are network + mount + UTS namespaces');
  dev
    .command('up')
    .description('start nats-server, redis, the coordinator and N agents (one per host h1..hN); returns when all registered')
    .option('--hosts <n>', 'number of hosts', (v) => Number(v), 2)
    .option('--kafka', 'also start a single-node Kafka broker (KRaft) on 127.0.0.1:9092, SASL/SCRAM over TLS with ACLs (credentials and request keys 0600 under /run/ferry/kafka/ferry/auth); the coordinator produces events to ferry.events and consumes signed requests from ferry.requests')
    .option('--ssh', "run sshd in every host and install each agent through it, as `ferry hosts add` does (ssh2, host keys checked)")
    .option('--no-tls', 'plain TCP to nats-server (default with auth: TLS, certificates from a throwaway CA made with openssl; clients trust it through their credentials files)')
    .option('--no-auth', 'anonymous NATS without subject permissions (default: one user per role, credentials 0600 under /run/ferry/dev/ferry/nats-auth)')
    .option('--json', 'print the cluster state as JSON')
    .action(
      action(async (opts: { hosts: number; kafka?: boolean; ssh?: boolean; tls: boolean; auth: boolean; json?: boolean }) => {
        // --ssh: no agent started directly; each is installed through its host's sshd instead.
        const state = await startLocalCluster({
          name: DEV_CLUSTER,
          hosts: opts.hosts,
          kafka: opts.kafka,
          agentHosts: opts.ssh ? [] : undefined,
          hostSshd: opts.ssh,
          natsAuth: opts.auth,
          // TLS needs the credentials files to carry the CA: --no-auth means plain TCP too.
          natsTls: opts.auth && opts.tls,
        });
        if (opts.ssh) {
          await bootstrapDevHosts(state).catch(async (err: unknown) => {
            await stopLocalCluster(DEV_CLUSTER).catch(() => undefined);
            throw err;
          });
        }
        if (opts.json) return printJson(state);
        process.stdout.write(
          `dev cluster up: ${state.layout.hosts.map((h) => `${h.name} (${h.address})`).join(', ')}\n` +
            `  NATS ${state.natsUrl}${state.tlsCaFile ? ' (TLS)' : ''}${state.credentials ? `, operator credentials ${state.credentials.cli}` : ''}, Redis ${state.redisUrl}${state.kafka ? `, Kafka ${state.kafka.brokers}${state.kafka.security ? ` (SASL/SCRAM over TLS; autoscaler credentials and request key in ${state.kafka.security.dir})` : ''}` : ''}\n` +
            `  dashboard ${state.http?.url ?? 'http://127.0.0.1:9464'}/, metrics and HTTP API on the same port (/metrics, /v1/..., /openapi.json)\n` +
            (state.http
              ? `  HTTP tokens (sign in to the dashboard with one; send as Authorization: Bearer): operator ${state.http.operatorTokenFile}, viewer ${state.http.viewerTokenFile}\n`
              : '') +
            `  logs in ${state.layout.logDir}\n`,
        );
      }),
    );
  dev
    .command('down')
    .description('stop every process of the local cluster (workloads too) and remove its namespaces, bridge and mounts')
    .option('--json', 'print {down: true}')
    .action(
      action(async (opts: { json?: boolean }) => {
        await stopLocalCluster(DEV_CLUSTER);
        if (opts.json) return printJson({ down: true });
        process.stdout.write('dev cluster down\n');
      }),
    );
  dev
    .command('kill')
    .description("SIGKILL one host's agent (a simulated host failure); its workloads keep running")
    .argument('<host>', 'host name, e.g. h2')
    .option('--json', 'print {killed: HOST, pid}')
    .action(
      action(async (host: string, opts: { json?: boolean }) => {
        const rec = await devCluster.killHost(DEV_CLUSTER, host);
        if (opts.json) return printJson({ killed: host, pid: rec.pid });
        process.stdout.write(`killed the agent of ${host} (pid ${rec.pid})\n`);
      }),
    );
  dev
    .command('start')
    .description("start a killed host's agent again in that host, as `dev up` did (the host comes back); returns once it registered")
    .argument('<host>', 'host name, e.g. h2')
    .option('--json', 'print {started: HOST, pid}')
    .action(
      action(async (host: string, opts: { json?: boolean }) => {
        const rec = await startLocalHost(DEV_CLUSTER, host);
        if (opts.json) return printJson({ started: host, pid: rec.pid });
        process.stdout.write(`started the agent of ${host} (pid ${rec.pid}); it registered\n`);
      }),
    );
  dev
    .command('status')
    .description('show the local cluster state file')
    .option('--json', 'print JSON')
    .action(
      action(async () => {
        printJson(devCluster.readClusterState(DEV_CLUSTER));
      }),
    );
  return dev;
}
