/**
 * A workload's inet sockets, seen before a migration freezes anything, and the two things ferry
 * does to them around CRIU's TCP repair (`criu dump --tcp-established`).
 *
 * What can move (decided here, so the pre-flight refuses the rest with FAILED_PRECONDITION instead
 * of CRIU failing, or a connection breaking, half-way):
 * - listening TCP and bound UDP sockets on the wildcard address or the workload's service address;
 * - TCP connections whose local end is the service address (it moves with the workload) and whose
 *   peer is on another host. A connection to a peer on the same host cannot move: the peer stays.
 *   A connection from the host's own address cannot either: that address stays too.
 *
 * Around the dump: CRIU leaves the frozen source's connections in repair mode and locked (an
 * nftables table named after its run id) when the tree is left stopped. Killing a repair-mode
 * socket is silent (no FIN, no RST), which is what a successful migration wants; a rollback instead
 * turns repair off on each socket (taken from the frozen process with pidfd_getfd) and drops the
 * lock, and the connections carry on where they were.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { IPPROTO_TCP, TCP_REPAIR, type LinuxSyscalls } from '@ferry/native';
import { runTool } from './run-tool';

export type SocketProtocol = 'tcp' | 'udp';

/** One inet socket of the tree, from /proc/net/{tcp,tcp6,udp,udp6}. */
export interface InetSocket {
  protocol: SocketProtocol;
  inode: number;
  /** /proc/net state code: 0x0A LISTEN, 0x01 ESTABLISHED (TCP) or connected (UDP), 0x07 CLOSE. */
  state: number;
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
}

export const TCP_ESTABLISHED = 0x01;
export const TCP_LISTEN = 0x0a;
export const SOCKET_CLOSE = 0x07;

/** One socket fd of a process of the tree. */
export interface SocketFd {
  pid: number;
  fd: number;
  inode: number;
}

const WILDCARDS = new Set(['0.0.0.0', '::']);

/** "0100007F" -> "127.0.0.1"; 32 hex digits -> an IPv6 text, v4-mapped shown as IPv4. /proc prints each 32-bit word in host (little-endian) order. */
export function parseProcNetAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => (w.match(/../g) ?? []).reverse().map((b) => parseInt(b, 16)));
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) throw new FerryError(ErrorCode.INTERNAL, `unreadable socket address ${hex}`);
  const isV4Mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (isV4Mapped) return bytes.slice(12).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  const text = groups.join(':');
  return text === '0:0:0:0:0:0:0:0' ? '::' : text.replace(/(^|:)0(:0)+(:|$)/, '::');
}

/** Parses one /proc/net/{tcp,udp}[6] table. */
export function parseProcNet(text: string, protocol: SocketProtocol): InetSocket[] {
  const out: InetSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [localIpHex, localPortHex] = f[1].split(':');
    const [remoteIpHex, remotePortHex] = f[2].split(':');
    out.push({
      protocol,
      inode: Number(f[9]),
      state: parseInt(f[3], 16),
      localIp: parseProcNetAddress(localIpHex),
      localPort: parseInt(localPortHex, 16),
      remoteIp: parseProcNetAddress(remoteIpHex),
      remotePort: parseInt(remotePortHex, 16),
    });
  }
  return out;
}

/** The socket fds of the given processes (their /proc/PID/fd links `socket:[INODE]`). */
export async function socketFdsOf(pids: number[]): Promise<SocketFd[]> {
  const out: SocketFd[] = [];
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m) out.push({ pid, fd: Number(fd), inode: Number(m[1]) });
    }
  }
  return out;
}

/**
 * The inet sockets the processes hold, from the tables of the first one's network namespace (the
 * host's, or a workload's own: workload-network.ts; a tree shares one).
 */
export async function inetSocketsOf(pids: number[]): Promise<InetSocket[]> {
  return inetSocketsAmong(await socketFdsOf(pids), pids[0]);
}

/** The inet sockets among these socket fds, from the tables of `pid`'s network namespace. */
async function inetSocketsAmong(fds: SocketFd[], pid: number | undefined): Promise<InetSocket[]> {
  const inodes = new Set(fds.map((s) => s.inode));
  if (inodes.size === 0 || pid === undefined) return [];
  const netDir = `/proc/${pid}/net`;
  const tables: Array<[string, SocketProtocol]> = [
    [`${netDir}/tcp`, 'tcp'],
    [`${netDir}/tcp6`, 'tcp'],
    [`${netDir}/udp`, 'udp'],
    [`${netDir}/udp6`, 'udp'],
  ];
  const out: InetSocket[] = [];
  for (const [file, protocol] of tables) {
    const text = await readFile(file, 'utf8').catch(() => '');
    out.push(...parseProcNet(text, protocol).filter((s) => inodes.has(s.inode)));
  }
  return out;
}

/**
 * Why these sockets cannot migrate with a workload whose service address is `serviceIp` (null:
 * it has none) from a host whose addresses are `hostIps`; empty when they can.
 */
export function unmigratableSockets(sockets: InetSocket[], serviceIp: string | null, hostIps: Set<string>): string[] {
  const problems: string[] = [];
  const onThisHost = (ip: string) => hostIps.has(ip) || ip.startsWith('127.') || ip === '::1' || ip === serviceIp;
  const local = (s: InetSocket) => `${s.localIp}:${s.localPort}`;
  const remote = (s: InetSocket) => `${s.remoteIp}:${s.remotePort}`;
  for (const s of sockets) {
    const boundAnywhere = WILDCARDS.has(s.localIp);
    const boundToService = serviceIp !== null && s.localIp === serviceIp;
    const unconnected = s.protocol === 'tcp' ? s.state === TCP_LISTEN || s.state === SOCKET_CLOSE : WILDCARDS.has(s.remoteIp);
    if (unconnected) {
      if (!boundAnywhere && !boundToService) {
        problems.push(`${s.protocol} socket bound to ${local(s)}, a host address that does not move with the workload`);
      }
      continue;
    }
    if (onThisHost(s.remoteIp)) {
      problems.push(`${s.protocol} connection ${local(s)} -> ${remote(s)} is to a peer on the same host, which stays behind`);
    } else if (serviceIp === null) {
      problems.push(`${s.protocol} connection ${local(s)} -> ${remote(s)} needs a service address to survive a migration (ferry run --address)`);
    } else if (!boundToService) {
      problems.push(`${s.protocol} connection ${local(s)} -> ${remote(s)} uses a host address, not the service address ${serviceIp}`);
    }
  }
  return problems;
}

/**
 * Turns TCP repair mode on or off on every TCP socket the processes hold, through copies of their
 * fds (pidfd_getfd). Off: a rolled-back source's connections work again. On: closing them sends
 * nothing to the peer (a discarded target copy must not reset a connection the source still owns).
 * Listening and other sockets the kernel refuses repair for are left alone.
 */
export async function setTreeTcpRepair(sys: RepairSyscalls, pids: number[], on: boolean): Promise<number> {
  const fds = await socketFdsOf(pids);
  const tcp = new Set((await inetSocketsAmong(fds, pids[0])).filter((s) => s.protocol === 'tcp').map((s) => s.inode));
  return setTcpRepair(sys, fds, tcp, on);
}

/** The syscalls setting TCP repair needs. */
export type RepairSyscalls = Pick<LinuxSyscalls, 'pidfdOpen' | 'pidfdGetfd' | 'setsockoptInt' | 'close'>;

/** setTreeTcpRepair for sockets already listed: those of `sockets` whose inode is in `tcpInodes`. */
export function setTcpRepair(sys: RepairSyscalls, sockets: SocketFd[], tcpInodes: Set<number>, on: boolean): number {
  let changed = 0;
  const pidfds = new Map<number, number>();
  try {
    for (const s of sockets) {
      if (!tcpInodes.has(s.inode)) continue;
      let pidfd = pidfds.get(s.pid);
      if (pidfd === undefined) {
        pidfd = sys.pidfdOpen(s.pid);
        pidfds.set(s.pid, pidfd);
      }
      const fd = sys.pidfdGetfd(pidfd, s.fd);
      try {
        sys.setsockoptInt(fd, IPPROTO_TCP, TCP_REPAIR, on ? 1 : 0);
        changed += 1;
      } catch (err) {
        // EPERM: a listening socket, which CRIU never put in repair mode.
        if ((err as { code?: string }).code !== 'EPERM') throw err;
      } finally {
        sys.close(fd);
      }
    }
  } finally {
    for (const pidfd of pidfds.values()) sys.close(pidfd);
  }
  return changed;
}

/** The nftables table CRIU locked the dumped connections with: `inet CRIU-<run id>`, cut to nftables' 31-character name limit as CRIU cuts it. */
export function criuLockTableFromDumpLog(log: string): string | null {
  const m = /CRIU run id = ([0-9a-f-]+)/.exec(log);
  return m ? `CRIU-${m[1]}`.slice(0, 26) : null;
}

/**
 * Drops CRIU's network lock table (no-op when it is gone already): in the host's network namespace,
 * or in the one of `netnsPid` (a workload with a namespace of its own, which CRIU locked whole).
 */
export async function dropCriuNetworkLock(table: string, netnsPid?: number): Promise<void> {
  if (!/^CRIU-[0-9a-f-]{1,21}$/.test(table)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `not a CRIU lock table: ${table}`);
  const nft = ['nft', 'delete', 'table', 'inet', table];
  const [file, ...args] = netnsPid === undefined ? nft : ['nsenter', `--target=${netnsPid}`, '--net', '--', ...nft];
  try {
    await runTool(file!, args, { timeoutMs: 10_000, code: ErrorCode.INTERNAL, failure: `nft delete table inet ${table} failed` });
  } catch (err) {
    // nft's word for a table that is gone already.
    if ((err as FerryError).details.some((line) => /No such file or directory/.test(line))) return;
    throw err;
  }
}
