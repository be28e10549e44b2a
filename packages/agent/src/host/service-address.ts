/**
 * A workload's service address (`ferry run --address A.B.C.D/NN`): a secondary IPv4 address on the
 * host's interface while the workload runs there. On migration it leaves the source after the dump
 * and comes up on the target before the restore, so the restored TCP sockets (bound to it) can be
 * repaired there; a gratuitous ARP tells the peers on the link which MAC answers for it now.
 *
 * Driven with iproute2's `ip` and iputils' `arping`, the tools every host has for this (as the dev
 * cluster drives `ip` for its namespaces); the interface is the one holding the host's registered
 * address.
 *
 * A workload in a network namespace of its own (workload-network.ts) holds the address itself; on
 * the host it is then `link`'s: the host end of the workload's link gets the gateway address, a /32
 * route to the service address goes through it, and the host answers ARP for the address on its
 * interface (a proxy entry) and forwards between the two. Adding, removing and announcing take the
 * link for such a workload and do that instead.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { SerialLock } from '../migration/serial-lock';
import { runTool } from './run-tool';
import { GATEWAY_IP } from './workload-network';

const COMMAND_TIMEOUT_MS = 10_000;
const NONLOCAL_BIND = '/proc/sys/net/ipv4/ip_nonlocal_bind';
/** One announcement at a time may switch NONLOCAL_BIND: two at once would each put back what the other set. */
const nonlocalBindTurns = new SerialLock();
/** Unsolicited ARP requests sent per announcement (one can be lost; arping waits 1 s between them). */
const GRATUITOUS_ARP_COUNT = 1;

interface IpAddrJson {
  ifname: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}

function run(cmd: string, args: string[]): Promise<string> {
  return runTool(cmd, args, { timeoutMs: COMMAND_TIMEOUT_MS, code: ErrorCode.INTERNAL, failure: `${cmd} ${args.join(' ')} failed` });
}

/** The IP part of `A.B.C.D/NN`. */
export function ipOf(cidr: string): string {
  return cidr.split('/')[0];
}

/** Every address of this network namespace (loopback included), IPv4 and IPv6, by interface. */
export async function hostAddresses(): Promise<Array<{ ifname: string; ip: string; prefixlen: number }>> {
  const list = JSON.parse(await run('ip', ['-j', 'addr', 'show'])) as IpAddrJson[];
  return list.flatMap((i) => (i.addr_info ?? []).map((a) => ({ ifname: i.ifname, ip: a.local, prefixlen: a.prefixlen })));
}

/** The interface that holds `hostAddress` (the host's registered address): where service addresses go. */
export async function interfaceOf(hostAddress: string): Promise<string> {
  const found = (await hostAddresses()).find((a) => a.ip === hostAddress);
  if (!found) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `no interface on this host holds its address ${hostAddress}`);
  return found.ifname;
}

/**
 * Configures `cidr` on the host's interface, or with `link` routes it to the workload's own network
 * namespace through that link (see above). Already there: nothing to do (a restarted agent or a
 * retried step). CONFLICT when the host uses that IP otherwise (its own address, or another
 * interface).
 */
export async function addServiceAddress(cidr: string, hostAddress: string, link?: string): Promise<void> {
  const ifname = await interfaceOf(hostAddress);
  const ip = ipOf(cidr);
  if (ip === hostAddress) throw new FerryError(ErrorCode.CONFLICT, `${ip} is this host's own address`);
  const present = (await hostAddresses()).filter((a) => a.ip === ip);
  if (link !== undefined) {
    if (present.length > 0) throw new FerryError(ErrorCode.CONFLICT, `${ip} is already configured on ${present[0].ifname}`);
    await run('ip', ['addr', 'replace', `${GATEWAY_IP}/32`, 'dev', link]);
    await run('ip', ['link', 'set', link, 'up']);
    await run('ip', ['route', 'replace', `${ip}/32`, 'dev', link]);
    await run('ip', ['neigh', 'replace', 'proxy', ip, 'dev', ifname]);
    // Forwarding between the two only (a proxy entry is answered only on a forwarding interface).
    for (const dev of [ifname, link]) await writeFile(`/proc/sys/net/ipv4/conf/${dev}/forwarding`, '1');
    return;
  }
  if (present.some((a) => a.ifname !== ifname)) throw new FerryError(ErrorCode.CONFLICT, `${ip} is already configured on ${present[0].ifname}`);
  if (present.length === 0) await run('ip', ['addr', 'add', cidr, 'dev', ifname]);
}

/** Removes `cidr` from the host's interface, or with `link` its route and proxy entry; gone already: nothing to do. */
export async function removeServiceAddress(cidr: string, hostAddress: string, link?: string): Promise<void> {
  const ifname = await interfaceOf(hostAddress);
  const ip = ipOf(cidr);
  // Never the host's own address, whatever a caller was told.
  if (ip === hostAddress) return;
  if (link !== undefined) {
    await run('ip', ['neigh', 'del', 'proxy', ip, 'dev', ifname]).catch(() => undefined);
    // The link goes with the workload's namespace; while it is there, so does the route.
    await run('ip', ['route', 'del', `${ip}/32`, 'dev', link]).catch(() => undefined);
    return;
  }
  if (!(await hostAddresses()).some((a) => a.ip === ip && a.ifname === ifname)) return;
  await run('ip', ['addr', 'del', cidr, 'dev', ifname]);
}

/**
 * Gratuitous ARP for the service address from this host's interface: peers (and the switch or
 * bridge) learn at once that this host answers for it, instead of after their ARP entry expires.
 * For an address behind a workload's link arping must send from an address this host does not
 * hold: allowed (net.ipv4.ip_nonlocal_bind) only for the moment it takes.
 */
export async function announceServiceAddress(cidr: string, hostAddress: string, link?: string): Promise<void> {
  const ifname = await interfaceOf(hostAddress);
  const args = ['-U', '-c', String(GRATUITOUS_ARP_COUNT), '-I', ifname, ...(link !== undefined ? ['-s', ipOf(cidr)] : []), ipOf(cidr)];
  if (link === undefined) {
    await run('arping', args);
    return;
  }
  await nonlocalBindTurns.run(async () => {
    const before = (await readFile(NONLOCAL_BIND, 'utf8')).trim();
    await writeFile(NONLOCAL_BIND, '1');
    try {
      await run('arping', args);
    } finally {
      await writeFile(NONLOCAL_BIND, before);
    }
  });
}
