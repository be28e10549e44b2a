/**
 * `ferry dev start HOST`: a host whose agent `ferry dev kill` SIGKILLed comes back. Its agent is
 * started inside the host's namespaces with the very command `startLocalCluster` gave it.
 */
import { ErrorCode, FerryError, toFerryError } from '@ferry/protocol';
import { devHostContexts, restartAgent, type DevProcessRecord } from './dev';
import { requireHost } from './dev/host-process';
import { readLogTail } from './dev/spawn-logged';
import { localAgentCommand, type LocalAgentOptions } from './local-cluster';
import { waitForHosts } from './wait-for-hosts';

export interface LocalHostOptions extends LocalAgentOptions {
  /** How long the agent may take to register again (default 60 s, as for `startLocalCluster`). */
  readyTimeoutMs?: number;
}

/**
 * Starts the agent of one host of a running local cluster again and resolves with its record once
 * it registered. Give the same `agentEnv`/`agentEnvFor` as to `startLocalCluster` (none for
 * `ferry dev up`): the command is rebuilt, not stored. NOT_FOUND for an unknown cluster or host;
 * FAILED_PRECONDITION if the agent still runs or was never started by the cluster (added over SSH).
 */
export async function startLocalHost(name: string, hostName: string, opts: LocalHostOptions = {}): Promise<DevProcessRecord> {
  const { state } = requireHost(name, hostName);
  if (!state.processes.some((p) => p.role === 'agent' && p.host === hostName)) {
    // Such an agent was installed by `ferry hosts add`; starting a second one here would register the name twice.
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `the agent on ${hostName} of dev cluster '${name}' was not started by the cluster (added over SSH?); \`ferry hosts add\` installs it`,
    );
  }
  // requireHost found the host, so it has a context.
  const context = devHostContexts(state).find((h) => h.name === hostName)!;
  const agent = await restartAgent(name, hostName, localAgentCommand(name, opts)(context));
  try {
    await waitForHosts(state.natsUrl, [hostName], opts.readyTimeoutMs ?? 60_000, state.credentials?.cli ?? null);
  } catch (err) {
    const cause = toFerryError(err);
    throw new FerryError(cause.code, `${cause.message}; see ${agent.logPath}`, { cause: err, details: [readLogTail(agent.logPath)] });
  }
  return agent;
}
