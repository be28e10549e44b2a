import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { DevProcessRecord, writeClusterState } from './cluster-state';
import { DevProcessCommand } from './dev-cluster-options';
import { requireHost, spawnInHost } from './host-process';
import { isProcessAlive, killProcesses } from './process-identity';

/**
 * Simulates a host failure: SIGKILLs that host's agent and nothing else (its workloads keep
 * running). Throws NOT_FOUND for an unknown cluster or host, FAILED_PRECONDITION if the agent is
 * not running. Returns the killed agent's record.
 */
export async function killHost(clusterName: string, hostName: string): Promise<DevProcessRecord> {
  const { state } = requireHost(clusterName, hostName);
  const agent = state.processes.find((p) => p.role === 'agent' && p.host === hostName && isProcessAlive(p));
  if (agent === undefined) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the agent on ${hostName} of dev cluster '${clusterName}' is not running`);
  }
  const survivors = await killProcesses([agent]);
  if (survivors.length > 0) {
    throw new FerryError(ErrorCode.INTERNAL, `the agent on ${hostName} (pid ${agent.pid}) survived SIGKILL`);
  }
  return agent;
}

/**
 * Starts a host's agent again after `killHost` (the host comes back), with the command the
 * caller gives (`agentCommand` is not stored). The new agent replaces the old record in the state
 * file. FAILED_PRECONDITION if that host's agent still runs.
 */
export async function restartAgent(
  clusterName: string,
  hostName: string,
  command: DevProcessCommand,
  cwd: string = process.cwd(),
): Promise<DevProcessRecord> {
  const { state, host } = requireHost(clusterName, hostName);
  const isThisAgent = (p: DevProcessRecord) => p.role === 'agent' && p.host === hostName;
  if (state.processes.some((p) => isThisAgent(p) && isProcessAlive(p))) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `the agent on ${hostName} of dev cluster '${clusterName}' is still running`);
  }
  const logPath = path.join(state.layout.logDir, `agent-${hostName}.log`);
  const started = await spawnInHost(host, command.argv, { env: command.env, cwd, logPath });
  const record: DevProcessRecord = {
    role: 'agent',
    host: hostName,
    pid: started.pid,
    startTime: started.startTime,
    argv: started.child.spawnargs,
    logPath,
  };
  state.processes = [...state.processes.filter((p) => !isThisAgent(p)), record];
  writeClusterState(state);
  return record;
}
