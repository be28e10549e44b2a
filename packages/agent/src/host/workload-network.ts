/**
 * A network namespace of the workload's own, for a workload run as another user with a service
 * address (`ferry run --user U --address A`), so its TCP connections move like any other's.
 *
 * Why: CRIU restores a connection by putting its socket in repair mode, which needs CAP_NET_ADMIN
 * over the socket's network namespace. A `--user` workload's tasks are restored in a user namespace
 * of their own (isolated-root.ts); in the host's network namespace they lack that capability and
 * the connection could only be restored closed. In a network namespace made with (so owned by)
 * their user namespace they hold it, and CRIU 4.2.1 restores them established (tried by hand: a
 * process as nobody kept its client's connection through a dump and a restore this way).
 *
 * Shape (as Calico routes a pod, without a bridge): a veth pair, `eth0` inside with the service
 * address as a /32 and a default route through the link-local gateway GATEWAY_IP, and on the host
 * `fw<hash of the name>` holding GATEWAY_IP itself, a /32 route to the service address through it,
 * and a proxy-ARP entry for the address on the host's own interface, so the peers on its link reach
 * the address as before and this host forwards to the workload (IPv4 forwarding switched on for
 * those two interfaces; docs/architecture.md says what that means for the host). CRIU dumps the namespace with the workload (its addresses, routes and the connections) and
 * recreates the pair on the target, naming the host end from `--external veth[eth0]:NAME`, a name
 * the target derives itself; the host side of the link (service-address.ts) is each host's own.
 *
 * A workload without a service address keeps the host's network namespace: its connections could
 * not move anyway (tcp-sockets.ts), and its listening sockets move as they are.
 */
import { createHash } from 'node:crypto';
import { ErrorCode } from '@ferry/protocol';
import { runTool } from './run-tool';

/** The workload's gateway, held by the host end of every workload's link (a /32: no route leaks). */
export const GATEWAY_IP = '169.254.1.1';
/** The workload's end of its link, inside its namespace. */
export const WORKLOAD_LINK_INSIDE = 'eth0';
const COMMAND_TIMEOUT_MS = 10_000;

/** The host end's name: `fw` and 12 hex digits of the workload name's hash (interface names stop at 15 bytes). */
export function workloadLinkName(workload: string): string {
  return `fw${createHash('sha256').update(`ferry-link:${workload}`).digest('hex').slice(0, 12)}`;
}

/**
 * The ifindex of the workload's end: CRIU recreates the link with its dumped index from the host's
 * network namespace (its usernsd), and the kernel refuses ("Operation not supported") an index the
 * host already uses there; hosts number their links from 1 up (2 is their first NIC's), so the
 * workload's end gets one far above, from the name's hash: [2^30, 2^30 + 2^28).
 */
export function workloadLinkIndex(workload: string): number {
  return 0x4000_0000 + (createHash('sha256').update(`ferry-link-index:${workload}`).digest().readUInt32BE(0) & 0x0fff_ffff);
}

/** CRIU's `--external veth[eth0]:NAME` on a restore: the pair it recreates gets this host's name for its host end. */
export function criuRestoreLinkArgs(workload: string): string[] {
  return ['--external', `veth[${WORKLOAD_LINK_INSIDE}]:${workloadLinkName(workload)}`];
}

function ip(args: string[], netnsPid?: number): Promise<string> {
  const [file, argv] = netnsPid === undefined ? ['ip', args] : ['nsenter', [`--target=${netnsPid}`, '--net', '--', 'ip', ...args]];
  return runTool(file, argv, { timeoutMs: COMMAND_TIMEOUT_MS, code: ErrorCode.FAILED_PRECONDITION, failure: `ip ${args.join(' ')} failed` });
}

/**
 * Makes the link of a just-started workload whose root is `pid` (in a network namespace of its own,
 * still empty) and configures its side: loopback up, `serviceIp` as a /32 on eth0, the default
 * route through GATEWAY_IP. The host side is service-address.ts's (addServiceAddress with the link).
 */
export async function makeWorkloadLink(pid: number, workload: string, serviceIp: string): Promise<string> {
  const link = workloadLinkName(workload);
  // Made from inside, so its end gets the index chosen above; the host end comes out here (the agent's namespace).
  await ip(['link', 'add', WORKLOAD_LINK_INSIDE, 'index', String(workloadLinkIndex(workload)), 'type', 'veth', 'peer', 'name', link, 'netns', `/proc/${process.pid}/ns/net`], pid);
  await ip(['link', 'set', 'lo', 'up'], pid);
  await ip(['addr', 'add', `${serviceIp}/32`, 'dev', WORKLOAD_LINK_INSIDE], pid);
  await ip(['link', 'set', WORKLOAD_LINK_INSIDE, 'up'], pid);
  await ip(['route', 'add', GATEWAY_IP, 'dev', WORKLOAD_LINK_INSIDE], pid);
  await ip(['route', 'add', 'default', 'via', GATEWAY_IP, 'dev', WORKLOAD_LINK_INSIDE], pid);
  return link;
}
