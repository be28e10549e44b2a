import { clusterLayout, subnetBase } from './cluster-layout';
import { compileDevClusterOptions } from './dev-cluster-options';
import { natsServerConfig, redisServerConfig } from './infra-configs';
import { isInvalidArgument } from '@ferry/protocol';
import { withStdioOpenedInside } from './host-process';

const commands = {
  coordinatorCommand: () => ({ argv: ['true'], env: {} }),
  agentCommand: () => ({ argv: ['true'], env: {} }),
  waitUntilReady: async () => undefined,
};

describe('clusterLayout', () => {
  it('gives the default cluster plain names h1..hN and bridge ferry0 in 198.18.0.0/24', () => {
    const layout = clusterLayout('ferry', 3, 0);
    expect(layout.bridge).toBe('ferry0');
    expect(layout.bridgeAddress).toBe('198.18.0.1');
    expect(layout.subnetCidr).toBe('198.18.0.0/24');
    expect(layout.hosts.map((h) => [h.name, h.netns, h.address])).toEqual([
      ['h1', 'h1', '198.18.0.11'],
      ['h2', 'h2', '198.18.0.12'],
      ['h3', 'h3', '198.18.0.13'],
    ]);
    expect(layout.stateFile).toBe('/run/ferry/dev/ferry/cluster.json');
    expect(layout.hosts[0].mountNsFile).toBe('/run/ferry/ns/ferry/h1.mnt');
  });

  it('prefixes other clusters and keeps interface names within 15 characters', () => {
    const layout = clusterLayout('tabcdefghij', 244, 511);
    expect(layout.bridge).toBe('fbr-tabcdefghij');
    expect(layout.hosts[0].netns).toBe('tabcdefghij-h1');
    const names = [layout.bridge, ...layout.hosts.flatMap((h) => [h.vethRoot, h.vethPeer])];
    for (const name of names) expect(name.length).toBeLessThanOrEqual(15);
    expect(new Set(names).size).toBe(names.length);
    expect(layout.hosts[243].address).toBe('198.19.255.254');
  });

  it('stays inside 198.18.0.0/15 for every subnet index', () => {
    for (let i = 0; i <= 511; i++) expect(subnetBase(i)).toMatch(/^198\.1[89]\.\d{1,3}$/);
    expect(subnetBase(256)).toBe('198.19.0');
  });
});

describe('compileDevClusterOptions', () => {
  it('fills defaults', () => {
    const options = compileDevClusterOptions(commands);
    expect(options).toMatchObject({ name: 'ferry', natsPort: 4222, redisPort: 6379, subnetIndex: 0 });
  });

  it('turns NATS auth and TLS on by default; anonymous NATS is plain TCP, and TLS without auth is refused', () => {
    expect(compileDevClusterOptions(commands)).toMatchObject({ natsAuth: true, natsTls: true });
    expect(compileDevClusterOptions({ ...commands, natsTls: false })).toMatchObject({ natsAuth: true, natsTls: false });
    expect(compileDevClusterOptions({ ...commands, natsAuth: false })).toMatchObject({ natsAuth: false, natsTls: false });
    expect(() => compileDevClusterOptions({ ...commands, natsAuth: false, natsTls: true })).toThrow(/natsTls needs natsAuth/);
  });

  it.each([
    [{ name: 'Bad_Name' }],
    [{ name: 'waytoolongname' }],
    [{ hosts: 0 }],
    [{ hosts: 245 }],
    [{ subnetIndex: 512 }],
    [{ natsPort: 5000, redisPort: 5000 }],
  ])('rejects %j', (bad) => {
    let caught: unknown;
    try {
      compileDevClusterOptions({ ...commands, ...bad });
    } catch (err) {
      caught = err;
    }
    expect(isInvalidArgument(caught)).toBe(true);
  });
});

describe('server configs', () => {
  it('raises nats max_payload to 8 MB', () => {
    const config = natsServerConfig({ listenAddress: '0.0.0.0', port: 4222 });
    expect(config).toContain('listen: "0.0.0.0:4222"');
    expect(config).toContain('max_payload: 8388608');
  });

  it('keeps redis in memory and bound to loopback and the bridge', () => {
    const config = redisServerConfig({ bindAddresses: ['127.0.0.1', '198.18.0.1'], port: 6379, dir: '/run/x' });
    expect(config.split('\n')).toEqual(
      expect.arrayContaining(['bind 127.0.0.1 198.18.0.1', 'port 6379', 'save ""', 'appendonly no', 'protected-mode no', 'dir /run/x']),
    );
  });
});

describe('withStdioOpenedInside', () => {
  it('passes the log path and the command as positional arguments, never through the shell text', () => {
    const argv = withStdioOpenedInside(['echo', 'a b', '$HOME'], '/tmp/x y.log');
    expect(argv.slice(3)).toEqual(['/tmp/x y.log', 'echo', 'a b', '$HOME']);
  });
});
