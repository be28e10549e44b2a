/**
 * What a host must offer before an agent is installed there: Linux, root, CRIU >= 4 (Debian 12's
 * 3.17 fails on current kernels), Node.js >= 20.15 (the bundle carries JavaScript and an N-API
 * addon, not a Node binary) and tar. One remote shell script reports the facts; pure functions judge them.
 */
import { ErrorCode, FerryError } from '@ferry/protocol';

/** What the probe script found on the remote. */
export interface RemoteFacts {
  os: string;
  kernel: string;
  uid: number;
  /** `criu --version`'s version, or null if criu is missing. */
  criuVersion: string | null;
  criuPath: string | null;
  nodeVersion: string | null;
  nodePath: string | null;
  hasTar: boolean;
  /** systemd is PID 1 (sd_booted(3): /run/systemd/system exists) and systemctl is there. */
  hasSystemd: boolean;
  hostname: string;
}

/** The lowest CRIU major version that works on current kernels (see DESIGN.md). */
export const MIN_CRIU_MAJOR = 4;
/** The lowest Node.js the agent runs on (package.json engines). */
export const MIN_NODE_VERSION: readonly [number, number] = [20, 15];

/** A POSIX sh script printing one `key=value` line per fact; it never fails, missing tools print nothing. */
export const REMOTE_PROBE_SCRIPT = [
  'PATH="$PATH:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin"',
  'echo "os=$(uname -s)"',
  'echo "kernel=$(uname -r)"',
  'echo "uid=$(id -u)"',
  'echo "hostname=$(uname -n)"',
  'c=$(command -v criu 2>/dev/null) && echo "criu_path=$c" && echo "criu_version=$("$c" --version 2>/dev/null | sed -n "s/^Version: *//p" | head -n1)"',
  'n=$(command -v node 2>/dev/null) && echo "node_path=$n" && echo "node_version=$("$n" --version 2>/dev/null)"',
  'command -v tar >/dev/null 2>&1 && echo "tar=yes"',
  '[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && echo "systemd=yes"',
  'true',
].join('\n');

/** Parses the probe script's output. */
export function parseRemoteFacts(output: string): RemoteFacts {
  const kv = new Map<string, string>();
  for (const line of output.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const orNull = (k: string) => (kv.get(k) ? (kv.get(k) as string) : null);
  return {
    os: kv.get('os') ?? '',
    kernel: kv.get('kernel') ?? '',
    uid: kv.has('uid') ? Number(kv.get('uid')) : -1,
    criuVersion: orNull('criu_version'),
    criuPath: orNull('criu_path'),
    nodeVersion: orNull('node_version'),
    nodePath: orNull('node_path'),
    hasTar: kv.get('tar') === 'yes',
    hasSystemd: kv.get('systemd') === 'yes',
    hostname: kv.get('hostname') ?? '',
  };
}

function versionParts(version: string): number[] {
  return version.replace(/^v/, '').split('.').map((p) => Number.parseInt(p, 10));
}

/** Lists every reason the host cannot run an agent; empty when it can. Pure. */
export function remoteProblems(facts: RemoteFacts): string[] {
  const problems: string[] = [];
  if (facts.os !== 'Linux') problems.push(`not Linux (uname -s: '${facts.os}')`);
  if (facts.uid !== 0) problems.push(`not root (uid ${facts.uid}): the agent runs CRIU and mounts filesystems; connect as root`);
  if (facts.criuVersion === null) problems.push(`criu is not installed (need CRIU >= ${MIN_CRIU_MAJOR}; on Debian 12 from trixie, see scripts/install-system.sh)`);
  else if (!(versionParts(facts.criuVersion)[0] >= MIN_CRIU_MAJOR)) {
    problems.push(`criu ${facts.criuVersion} is too old (need >= ${MIN_CRIU_MAJOR}; older ones fail on current kernels)`);
  }
  if (facts.nodeVersion === null) problems.push(`node is not installed (need Node.js >= ${MIN_NODE_VERSION.join('.')})`);
  else {
    const [major, minor] = versionParts(facts.nodeVersion);
    const [needMajor, needMinor] = MIN_NODE_VERSION;
    if (!(major > needMajor || (major === needMajor && minor >= needMinor))) {
      problems.push(`node ${facts.nodeVersion} is too old (need >= ${MIN_NODE_VERSION.join('.')})`);
    }
  }
  if (!facts.hasTar) problems.push('tar is not installed (the agent bundle is a tarball)');
  return problems;
}

/** Throws FAILED_PRECONDITION listing every problem, if any. */
export function assertRemoteUsable(host: string, facts: RemoteFacts): void {
  const problems = remoteProblems(facts);
  if (problems.length > 0) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${host} cannot run a ferry agent: ${problems.join('; ')}`, { details: problems });
  }
}
