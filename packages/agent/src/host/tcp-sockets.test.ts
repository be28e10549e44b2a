import { criuLockTableFromDumpLog, parseProcNet, parseProcNetAddress, setTcpRepair, TCP_ESTABLISHED, TCP_LISTEN, unmigratableSockets, type InetSocket, type RepairSyscalls } from './tcp-sockets';

// Lines as the kernel prints them (x86-64: each 32-bit word of an address in little-endian hex).
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 640012C6:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 640012C6:1B58 0D0012C6:D2F2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF0000640012C6:1F91 0000000000000000FFFF00000D0012C6:A000 01 00000000:00000000 00:00000000 00000000     0        0 5252 1 0000000000000000 20 4 30 10 -1`;

const sock = (over: Partial<InetSocket>): InetSocket => ({
  protocol: 'tcp', inode: 1, state: TCP_ESTABLISHED, localIp: '198.18.0.100', localPort: 7000, remoteIp: '198.18.0.13', remotePort: 50000, ...over,
});
const HOST = new Set(['198.18.0.11']);

test('/proc/net addresses: IPv4, IPv6 wildcard, v4-mapped IPv6', () => {
  expect(parseProcNetAddress('0100007F')).toBe('127.0.0.1');
  expect(parseProcNetAddress('640012C6')).toBe('198.18.0.100');
  expect(parseProcNetAddress('00000000000000000000000000000000')).toBe('::');
  expect(parseProcNetAddress('0000000000000000FFFF0000640012C6')).toBe('198.18.0.100');
});

test('/proc/net tables parse into sockets with state, ends and inode', () => {
  expect(parseProcNet(TCP, 'tcp')).toEqual([
    { protocol: 'tcp', inode: 4242, state: TCP_LISTEN, localIp: '198.18.0.100', localPort: 7000, remoteIp: '0.0.0.0', remotePort: 0 },
    { protocol: 'tcp', inode: 4343, state: TCP_ESTABLISHED, localIp: '198.18.0.100', localPort: 7000, remoteIp: '198.18.0.13', remotePort: 54002 },
  ]);
  expect(parseProcNet(TCP6, 'tcp').map((s) => [s.localIp, s.localPort, s.remoteIp, s.state])).toEqual([
    ['::', 8080, '::', TCP_LISTEN],
    ['198.18.0.100', 8081, '198.18.0.13', TCP_ESTABLISHED],
  ]);
});

test('connections on the service address to another host, and listeners on it or the wildcard, can move', () => {
  expect(unmigratableSockets([
    sock({}),
    sock({ state: TCP_LISTEN, remoteIp: '0.0.0.0', remotePort: 0 }),
    sock({ state: TCP_LISTEN, localIp: '0.0.0.0', remoteIp: '0.0.0.0', remotePort: 0 }),
    sock({ protocol: 'udp', state: 0x07, remoteIp: '0.0.0.0', remotePort: 0 }),
  ], '198.18.0.100', HOST)).toEqual([]);
  // Without connections, a workload without a service address moves too.
  expect(unmigratableSockets([sock({ state: TCP_LISTEN, localIp: '0.0.0.0', remoteIp: '0.0.0.0', remotePort: 0 })], null, HOST)).toEqual([]);
});

test('what cannot move is named: a peer on the same host, a host address, no service address', () => {
  expect(unmigratableSockets([sock({ remoteIp: '198.18.0.11' })], '198.18.0.100', HOST)[0]).toMatch(/peer on the same host/);
  expect(unmigratableSockets([sock({ remoteIp: '127.0.0.1' })], '198.18.0.100', HOST)[0]).toMatch(/peer on the same host/);
  expect(unmigratableSockets([sock({ remoteIp: '198.18.0.100' })], '198.18.0.100', HOST)[0]).toMatch(/peer on the same host/);
  expect(unmigratableSockets([sock({ localIp: '198.18.0.11' })], '198.18.0.100', HOST)[0]).toMatch(/uses a host address/);
  expect(unmigratableSockets([sock({ localIp: '198.18.0.11' })], null, HOST)[0]).toMatch(/needs a service address/);
  expect(unmigratableSockets([sock({ state: TCP_LISTEN, localIp: '198.18.0.11', remoteIp: '0.0.0.0', remotePort: 0 })], '198.18.0.100', HOST)[0]).toMatch(/bound to 198\.18\.0\.11:7000/);
});

test("CRIU's lock table is named after its run id, cut as nftables names are", () => {
  const log = '(00.000000) CRIU run id = 299d627f-7216-4835-962e-67122bf61b5e\n(00.001) other';
  expect(criuLockTableFromDumpLog(log)).toBe('CRIU-299d627f-7216-4835-96');
  expect(criuLockTableFromDumpLog('no id')).toBeNull();
});

test('repair mode is set through a copy of each TCP socket fd; refusals for listeners are skipped; every fd is closed', () => {
  const calls: string[] = [];
  const open = new Set<number>();
  let next = 100;
  const sys: RepairSyscalls = {
    pidfdOpen: (pid) => (calls.push(`pidfd ${pid}`), open.add(next), next++),
    pidfdGetfd: (_pidfd, fd) => (calls.push(`getfd ${fd}`), open.add(next), next++),
    setsockoptInt: (fd, _level, _opt, value) => {
      calls.push(`repair ${fd}=${value}`);
      // fd 104 is the copy of the listener's fd 6 (pid 8's pidfd is 102, its fd 5 copy 103).
      if (fd === 104) throw Object.assign(new Error('listener'), { code: 'EPERM' });
    },
    close: (fd) => void open.delete(fd),
  };
  const sockets = [
    { pid: 7, fd: 3, inode: 1 },
    { pid: 7, fd: 4, inode: 2 }, // a UDP socket: not in the TCP set
    { pid: 8, fd: 5, inode: 3 },
    { pid: 8, fd: 6, inode: 4 }, // a listener: EPERM, skipped
  ];
  expect(setTcpRepair(sys, sockets, new Set([1, 3, 4]), false)).toBe(2);
  expect(calls).toEqual(['pidfd 7', 'getfd 3', 'repair 101=0', 'pidfd 8', 'getfd 5', 'repair 103=0', 'getfd 6', 'repair 104=0']);
  expect(open.size).toBe(0);
});
