import * as fs from 'node:fs';
import * as net from 'node:net';
import { IPPROTO_TCP, SHUT_RD, SHUT_RDWR, SHUT_WR, TCP_REPAIR } from './constants';
import { SyscallArgumentError } from './errors';
import { createLinuxSyscalls } from './syscalls';

const sys = createLinuxSyscalls();

/** A connected loopback TCP pair; the client's kernel fd is what the test works on. */
async function connectedPair(): Promise<{ client: net.Socket; server: net.Server; accepted: Promise<net.Socket> }> {
  let resolveAccepted: (s: net.Socket) => void = () => undefined;
  const accepted = new Promise<net.Socket>((r) => (resolveAccepted = r));
  const server = net.createServer((s) => resolveAccepted(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', () => r()));
  return { client, server, accepted };
}

describe('setsockoptInt', () => {
  it('turns TCP repair mode on and off on an established socket (root: CAP_NET_ADMIN)', async () => {
    const { client, server, accepted } = await connectedPair();
    const peer = await accepted;
    try {
      const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
      expect(fd).toBeGreaterThan(2);
      sys.setsockoptInt(fd, IPPROTO_TCP, TCP_REPAIR, 1);
      sys.setsockoptInt(fd, IPPROTO_TCP, TCP_REPAIR, 0);
      // Out of repair mode the connection works as before.
      const got = new Promise<string>((r) => peer.once('data', (d) => r(d.toString())));
      client.write('still here');
      expect(await got).toBe('still here');
    } finally {
      client.destroy();
      peer.destroy();
      server.close();
    }
  });

  it('reports the kernel refusal with errno, and checks arguments before calling it', () => {
    expect(() => sys.setsockoptInt(987_654, IPPROTO_TCP, TCP_REPAIR, 0)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'setsockopt' }));
    expect(() => sys.setsockoptInt(-1, IPPROTO_TCP, TCP_REPAIR, 0)).toThrow(SyscallArgumentError);
    expect(() => sys.setsockoptInt(3, IPPROTO_TCP, TCP_REPAIR, 1.5)).toThrow(SyscallArgumentError);
    expect(() => sys.setsockoptInt(3, -6, TCP_REPAIR, 0)).toThrow(SyscallArgumentError);
  });
});

describe('socketpair / shutdown', () => {
  it('makes a connected close-on-exec Unix stream pair, and shutdown(SHUT_WR) ends the stream at the peer', async () => {
    const [a, b] = sys.socketpair();
    try {
      expect(a).not.toBe(b);
      for (const fd of [a, b]) {
        // fdinfo's flags are octal; O_CLOEXEC is 02000000.
        const flags = parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8);
        expect(flags & 0o2000000).toBe(0o2000000);
        expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/^socket:/);
      }
      fs.writeSync(a, 'ping');
      sys.shutdown(a, SHUT_WR);
      const buf = Buffer.alloc(16);
      expect(fs.readSync(b, buf, 0, 16, null)).toBe(4);
      expect(buf.subarray(0, 4).toString()).toBe('ping');
      expect(fs.readSync(b, buf, 0, 16, null)).toBe(0);
    } finally {
      sys.close(a);
      sys.close(b);
    }
  });

  it('reports the kernel refusal with errno, and checks arguments before calling it', () => {
    expect(() => sys.shutdown(987_654, SHUT_RDWR)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'shutdown' }));
    expect(() => sys.shutdown(-1, SHUT_RD)).toThrow(SyscallArgumentError);
    expect(() => sys.shutdown(0, 3)).toThrow(expect.objectContaining({ syscall: 'shutdown', argument: 'how' }));
  });
});
