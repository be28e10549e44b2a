/**
 * Where a bootstrapped agent lives on its host and how it is run: the files (bundle, env file,
 * systemd unit or supervisor script) and the remote shell snippets that install, start, stop and
 * remove it. Everything here is pure text generation, so it is unit-tested without a host.
 */
import * as path from 'node:path';
import { AGENT_MAIN_IN_BUNDLE } from './agent-bundle';
import { shellQuote } from './ssh-session';

/** systemd where the host runs it; otherwise a supervisor shell loop started with setsid. */
export type ServiceManager = 'systemd' | 'process';

/** The agent's configuration, written as an env file (the variables packages/agent/src/main.ts reads). */
export interface AgentConfig {
  host: string;
  address: string;
  natsUrl: string;
  dataDir: string;
  workDir: string;
  logLevel: string;
  /** Extra FERRY_* variables (e.g. FERRY_HEARTBEAT_INTERVAL_MS). */
  extraEnv: Record<string, string>;
}

/** Paths of one installation. */
export interface AgentInstallLayout {
  /** The bundle is unpacked here; the agent's program is `<prefix>/node_modules/@ferry/agent/dist/main.js`. */
  prefix: string;
  /** The env file with the agent's configuration. */
  envFile: string;
  /** The systemd unit name (systemd mode). */
  unitName: string;
  /** The unit file (systemd mode). */
  unitFile: string;
  /** The supervisor script and its pid files and log (process mode). */
  supervisorScript: string;
  supervisorPidFile: string;
  agentPidFile: string;
  logFile: string;
}

/** Where `ferry hosts add` installs on a real host: the paths deploy/systemd/ferry-agent.service uses. */
export const DEFAULT_INSTALL_PREFIX = '/opt/ferry';
export const DEFAULT_CONFIG_DIR = '/etc/ferry';
export const SYSTEMD_UNIT_DIR = '/etc/systemd/system';
/** Seconds the supervisor waits before restarting an agent that exited with an error. */
export const SUPERVISOR_RESTART_DELAY_S = 2;
/** Seconds between SIGTERM and SIGKILL when stopping an agent. */
export const AGENT_STOP_GRACE_S = 10;

/** The layout for an install prefix and config directory. */
export function agentInstallLayout(prefix: string, configDir: string): AgentInstallLayout {
  return {
    prefix,
    envFile: path.posix.join(configDir, 'agent.env'),
    unitName: 'ferry-agent.service',
    unitFile: path.posix.join(SYSTEMD_UNIT_DIR, 'ferry-agent.service'),
    supervisorScript: path.posix.join(prefix, 'run-agent.sh'),
    supervisorPidFile: path.posix.join(prefix, 'supervisor.pid'),
    agentPidFile: path.posix.join(prefix, 'agent.pid'),
    logFile: path.posix.join(prefix, 'agent.log'),
  };
}

/** An env file value: systemd's EnvironmentFile and sh's `.` both accept double-quoted values. */
function envValue(value: string): string {
  if (/[\n\0]/.test(value)) throw new Error(`environment values cannot contain newlines or NUL: ${JSON.stringify(value)}`);
  return `"${value.replace(/(["\\$`])/g, '\\$1')}"`;
}

/** The env file's text. */
export function renderAgentEnv(config: AgentConfig): string {
  const vars: Record<string, string> = {
    FERRY_HOST: config.host,
    FERRY_ADDRESS: config.address,
    FERRY_NATS_URL: config.natsUrl,
    FERRY_DATA_DIR: config.dataDir,
    FERRY_WORK_DIR: config.workDir,
    FERRY_LOG_LEVEL: config.logLevel,
    ...config.extraEnv,
  };
  return [
    '# Written by `ferry hosts add`; read by the ferry agent (systemd EnvironmentFile or run-agent.sh).',
    ...Object.entries(vars).map(([k, v]) => `${k}=${envValue(v)}`),
    '',
  ].join('\n');
}

/** The systemd unit (same policy as deploy/systemd/ferry-agent.service, with this install's paths). */
export function renderAgentUnit(layout: AgentInstallLayout, nodePath: string): string {
  return [
    '# Written by `ferry hosts add`; see deploy/systemd/ferry-agent.service.',
    '[Unit]',
    'Description=ferry agent (live migration of process groups with CRIU)',
    'Wants=network-online.target',
    'After=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `EnvironmentFile=${layout.envFile}`,
    // CRIU's lazy dump needs 4 MiB pipes (scripts/host-sysctl.sh); '-': the agent runs without it.
    `ExecStartPre=-/bin/sh -c 'test "$(cat /proc/sys/fs/pipe-max-size)" -ge 4194304 || echo 4194304 > /proc/sys/fs/pipe-max-size'`,
    `ExecStart=${nodePath} ${path.posix.join(layout.prefix, AGENT_MAIN_IN_BUNDLE)}`,
    'Restart=on-failure',
    'RestartSec=2s',
    // Workloads are the agent's children: only the agent is signalled, workloads outlive it.
    'KillMode=process',
    'TimeoutStopSec=30s',
    'LimitNOFILE=1048576',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/**
 * The supervisor for hosts without systemd: restarts the agent when it fails (like
 * Restart=on-failure), forwards SIGTERM to it and exits when it stops cleanly. Started with setsid
 * so it leaves the SSH session; pid files let `hosts remove` stop exactly these processes.
 */
export function renderSupervisorScript(layout: AgentInstallLayout, nodePath: string): string {
  const q = shellQuote;
  return [
    '#!/bin/sh',
    '# Written by `ferry hosts add`: keeps the ferry agent running on a host without systemd.',
    `set -a; . ${q(layout.envFile)}; set +a`,
    `echo $$ > ${q(layout.supervisorPidFile)}`,
    'child=',
    'stopping=',
    `trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT`,
    // CRIU's lazy dump needs 4 MiB pipes (scripts/host-sysctl.sh); the agent runs without it.
    `test "$(cat /proc/sys/fs/pipe-max-size)" -ge 4194304 || echo 4194304 > /proc/sys/fs/pipe-max-size 2>/dev/null || true`,
    'while :; do',
    `  ${q(nodePath)} ${q(path.posix.join(layout.prefix, AGENT_MAIN_IN_BUNDLE))} &`,
    '  child=$!',
    `  echo "$child" > ${q(layout.agentPidFile)}`,
    // wait returns early when a trapped signal arrives; wait again for the agent's real exit.
    '  wait "$child"; status=$?',
    '  while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done',
    `  rm -f ${q(layout.agentPidFile)}`,
    '  if [ -n "$stopping" ] || [ "$status" -eq 0 ]; then break; fi',
    `  echo "ferry supervisor: agent exited with status $status; restarting in ${SUPERVISOR_RESTART_DELAY_S} s" >&2`,
    `  sleep ${SUPERVISOR_RESTART_DELAY_S}`,
    'done',
    `rm -f ${q(layout.supervisorPidFile)}`,
    '',
  ].join('\n');
}

/**
 * Unpacks an uploaded bundle into the prefix (replacing an older bundle, keeping nothing else of
 * it) and makes the config directory.
 */
export function installScript(layout: AgentInstallLayout, uploadedBundle: string): string {
  const q = shellQuote;
  return [
    'set -eu',
    `mkdir -p ${q(layout.prefix)} ${q(path.posix.dirname(layout.envFile))}`,
    `rm -rf ${q(path.posix.join(layout.prefix, 'node_modules'))}`,
    `tar -xzf ${q(uploadedBundle)} -C ${q(layout.prefix)}`,
    `rm -f ${q(uploadedBundle)}`,
  ].join('\n');
}

/** Starts the agent; the process-mode start detaches fully (new session, stdio to the log). */
export function startScript(layout: AgentInstallLayout, manager: ServiceManager): string {
  const q = shellQuote;
  if (manager === 'systemd') {
    return ['set -eu', 'systemctl daemon-reload', `systemctl enable --now ${layout.unitName}`].join('\n');
  }
  return [
    'set -eu',
    `chmod 0755 ${q(layout.supervisorScript)}`,
    // stdio is opened here, on the host: the agent and its workloads hold no fd of the SSH session.
    `setsid /bin/sh ${q(layout.supervisorScript)} </dev/null >>${q(layout.logFile)} 2>&1 &`,
    // Wait for the supervisor's pid file, so a caller that stops right away finds it.
    `i=0; while [ ! -s ${q(layout.supervisorPidFile)} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done`,
    `[ -s ${q(layout.supervisorPidFile)} ] || { echo "the supervisor did not start; see ${layout.logFile}" >&2; exit 1; }`,
  ].join('\n');
}

/**
 * Is an agent of this layout running? Prints `running` or `stopped`. Pid files are checked
 * against /proc/PID/cmdline, so a reused pid is not mistaken for the agent.
 */
export function statusScript(layout: AgentInstallLayout, manager: ServiceManager): string {
  const q = shellQuote;
  if (manager === 'systemd') {
    return `if systemctl is-active --quiet ${layout.unitName}; then echo running; else echo stopped; fi`;
  }
  return [
    `p=$(cat ${q(layout.supervisorPidFile)} 2>/dev/null || true)`,
    `if [ -n "$p" ] && tr '\\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF ${q(layout.supervisorScript)}; then echo running; else echo stopped; fi`,
  ].join('\n');
}

/**
 * Stops the agent (never its workloads): systemctl stop (KillMode=process), or SIGTERM to the
 * supervisor, which forwards it to the agent and exits; SIGKILL after a grace period.
 */
export function stopScript(layout: AgentInstallLayout, manager: ServiceManager): string {
  const q = shellQuote;
  if (manager === 'systemd') {
    return ['set -eu', `systemctl disable --now ${layout.unitName} 2>/dev/null || systemctl stop ${layout.unitName} || true`].join('\n');
  }
  const isOurs = (pidVar: string, needle: string) =>
    `[ -n "$${pidVar}" ] && tr '\\0' ' ' </proc/$${pidVar}/cmdline 2>/dev/null | grep -qF ${q(needle)}`;
  return [
    `sp=$(cat ${q(layout.supervisorPidFile)} 2>/dev/null || true)`,
    `ap=$(cat ${q(layout.agentPidFile)} 2>/dev/null || true)`,
    `if ${isOurs('sp', layout.supervisorScript)}; then kill -TERM "$sp"; else sp=; fi`,
    `if ${isOurs('ap', AGENT_MAIN_IN_BUNDLE)}; then :; else ap=; fi`,
    `i=0; while [ $i -lt ${AGENT_STOP_GRACE_S * 10} ]; do`,
    '  alive=',
    '  for p in $sp $ap; do kill -0 "$p" 2>/dev/null && alive=1; done',
    '  [ -z "$alive" ] && break',
    '  sleep 0.1; i=$((i+1))',
    'done',
    'for p in $sp $ap; do kill -KILL "$p" 2>/dev/null || true; done',
    `rm -f ${q(layout.supervisorPidFile)} ${q(layout.agentPidFile)}`,
  ].join('\n');
}

/** Removes everything the install made (after stopping). The data dir (workload inventory) is kept. */
export function removeScript(layout: AgentInstallLayout, manager: ServiceManager): string {
  const q = shellQuote;
  return [
    'set -eu',
    ...(manager === 'systemd' ? [`rm -f ${q(layout.unitFile)}`, 'systemctl daemon-reload'] : []),
    `rm -f ${q(layout.envFile)}`,
    `rm -rf ${q(layout.prefix)}`,
  ].join('\n');
}
