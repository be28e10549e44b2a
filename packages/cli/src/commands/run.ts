import type { Command } from 'commander';
import { CoordVerb, ErrorCode, FerryError } from '@ferry/protocol';
import { askCoordinator } from '../client';
import { printJson } from '../output';
import { action } from './action';

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerRun(program: Command): Command {
  return program
    .command('run')
    .description("launch a workload on a host, as the init of its own PID namespace, with its own /proc and a root of the host's directories")
    .requiredOption('--host <host>', 'host to run on')
    .requiredOption('--name <name>', 'workload name, unique in the cluster')
    .option('--env <K=V>', 'environment variable for the workload (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory (absolute)')
    .option('--mount <fs:path>', 'mount cluster filesystem FS at PATH in the host first (repeatable), e.g. shared:/data', collect, [])
    .option('--address <cidr>', "the workload's own IPv4 service address, e.g. 198.18.0.100/24: configured on the host, moved with the workload, so its TCP connections survive a migration")
    .option(
      '--local-dir <path>',
      "a host-local directory that belongs to the workload and moves with it (repeatable; below the host's FERRY_LOCAL_DIR_ROOTS, default /srv; created if missing)",
      collect,
      [],
    )
    .option(
      '--user <user[:group]>',
      'run as this user (names, resolved on HOST), in a user namespace of its own as well; it migrates like any other workload (restored eagerly unless the target allows unprivileged userfaultfd, its TCP connections closed at a move)',
    )
    .option(
      '--host-root',
      "share the host's mount namespace instead of a root of its own: it then sees the host's /proc (other processes' pids) and every mount of the host (not with --user)",
    )
    .option('--json', 'print the workload as JSON')
    .argument('<command...>', 'command and arguments (after --)')
    .action(
      action(async (argv: string[], opts: { host: string; name: string; env: string[]; mount: string[]; localDir: string[]; cwd?: string; address?: string; user?: string; hostRoot?: boolean; json?: boolean }) => {
        const mounts = opts.mount.map((m) => {
          const i = m.indexOf(':');
          if (i <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--mount wants FS:PATH, got ${JSON.stringify(m)}`);
          return { fs: m.slice(0, i), path: m.slice(i + 1) };
        });
        const env: Record<string, string> = {};
        for (const kv of opts.env) {
          const i = kv.indexOf('=');
          if (i <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--env wants K=V, got ${JSON.stringify(kv)}`);
          env[kv.slice(0, i)] = kv.slice(i + 1);
        }
        const { workload } = await askCoordinator(
          CoordVerb.RUN,
          { host: opts.host, name: opts.name, argv, env, cwd: opts.cwd, mounts, localDirs: opts.localDir, ...(opts.address ? { address: opts.address } : {}), ...(opts.user ? { user: opts.user } : {}), ...(opts.hostRoot ? { hostRoot: true } : {}) },
          20_000,
        );
        if (opts.json) return printJson(workload);
        process.stdout.write(`${workload.name} running on ${workload.host} (pid ${workload.pid}${workload.address ? `, address ${workload.address}` : ''}${workload.user ? `, as ${workload.user.name}` : ''})\n`);
      }),
    );
}
