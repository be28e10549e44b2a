import { connectionsMove, linkOf } from '../workloads/inventory';
import { criuRestoreLinkArgs, GATEWAY_IP, workloadLinkIndex, workloadLinkName } from './workload-network';

test("a workload's link name is derived from its name alone: the same on every host, a valid interface name, one per workload", () => {
  const name = workloadLinkName('pg');
  expect(name).toMatch(/^fw[0-9a-f]{12}$/);
  // Linux interface names stop at 15 bytes (IFNAMSIZ 16 with the NUL).
  expect(name.length).toBeLessThanOrEqual(15);
  expect(workloadLinkName('pg')).toBe(name);
  expect(workloadLinkName('pg2')).not.toBe(name);
  // Whatever the workload is called (names are bounded by the protocol, not here), the name stays short and plain.
  expect(workloadLinkName('a'.repeat(200) + ' ; rm -rf /')).toMatch(/^fw[0-9a-f]{12}$/);
});

test("the workload's end of its link has an index far above the host's own links, the same wherever it is restored", () => {
  for (const name of ['pg', 'ngx', 'a'.repeat(63)]) {
    const index = workloadLinkIndex(name);
    expect(index).toBe(workloadLinkIndex(name));
    expect(index).toBeGreaterThanOrEqual(2 ** 30);
    expect(index).toBeLessThan(2 ** 30 + 2 ** 28);
  }
  expect(workloadLinkIndex('pg')).not.toBe(workloadLinkIndex('ngx'));
});

test("CRIU's restore names the recreated pair's host end from this host's derivation, never from the image", () => {
  expect(criuRestoreLinkArgs('pg')).toEqual(['--external', `veth[eth0]:${workloadLinkName('pg')}`]);
  expect(GATEWAY_IP).toBe('169.254.1.1');
});

test('connections move for a workload with an address in the host user namespace or a network namespace of its own', () => {
  const user = { name: 'postgres', uid: 104, gid: 110 };
  expect(connectionsMove({ address: '198.18.0.100/24' })).toBe(true);
  expect(connectionsMove({ address: '198.18.0.100/24', user, ownNetwork: true })).toBe(true);
  // Another user in the host's network namespace (an older record): they cannot be repaired there.
  expect(connectionsMove({ address: '198.18.0.100/24', user })).toBe(false);
  expect(connectionsMove({})).toBe(false);
  expect(linkOf({ name: 'pg', ownNetwork: true })).toBe(workloadLinkName('pg'));
  expect(linkOf({ name: 'pg' })).toBeUndefined();
});
