import { bothPageServerTls, chooseRestoreMode, chooseTransport, firstFrameTimeoutMs, MIN_DUMP_BYTES_PER_S, planDataPath, plannedTransport } from './migration-plan';

const tls = { pageServerTls: true, pageTunnel: false };
const clear = { pageServerTls: false, pageTunnel: false };
const tunnel = { pageServerTls: true, pageTunnel: true };

test('auto takes the page server only when both hosts can run it over TLS', () => {
  expect(chooseTransport('auto', tls, tls)).toBe('page-server');
  expect(chooseTransport('auto', tls, clear)).toBe('auto');
  expect(chooseTransport('auto', clear, tls)).toBe('auto');
  expect(chooseTransport('auto', clear, clear)).toBe('auto');
});

test('an explicit transport is kept whatever the probes say', () => {
  for (const wanted of ['direct', 'nats', 'page-server'] as const) {
    expect(chooseTransport(wanted, tunnel, tunnel)).toBe(wanted);
    expect(chooseTransport(wanted, tls, tls)).toBe(wanted);
    expect(chooseTransport(wanted, clear, clear)).toBe(wanted);
  }
});

test('TLS for the page server needs both ends', () => {
  expect(bothPageServerTls(tls, tls)).toBe(true);
  expect(bothPageServerTls(tls, clear)).toBe(false);
  expect(bothPageServerTls(clear, tls)).toBe(false);
});

test('the first frame may take the idle timeout plus a slow dump of the workload\'s memory, within the checkpoint deadline', () => {
  expect(firstFrameTimeoutMs(5000, 0, 1_800_000)).toBe(5000);
  expect(firstFrameTimeoutMs(5000, MIN_DUMP_BYTES_PER_S * 20, 1_800_000)).toBe(25_000);
  expect(firstFrameTimeoutMs(5000, MIN_DUMP_BYTES_PER_S * 100_000, 1_800_000)).toBe(1_800_000);
  // Never below the idle timeout, even with a tiny checkpoint deadline.
  expect(firstFrameTimeoutMs(5000, MIN_DUMP_BYTES_PER_S * 100, 1000)).toBe(5000);
});

describe('chooseRestoreMode', () => {
  const lazy = { lazyPages: true };
  const noUffd = { lazyPages: false };
  test('an explicit mode is that mode, or an error before anything is frozen', () => {
    expect(chooseRestoreMode('post-copy', null, lazy, 'h2', 'auto')).toBe('post-copy');
    expect(chooseRestoreMode('eager', 'post-copy', lazy, 'h2', 'auto')).toBe('eager');
    expect(() => chooseRestoreMode('lazy', null, noUffd, 'h2', 'auto')).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
    expect(() => chooseRestoreMode('post-copy', null, lazy, 'h2', 'page-server')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
  test('without one: lazy where the target allows it; never post-copy unless the cluster says so', () => {
    expect(chooseRestoreMode(undefined, null, lazy, 'h2', 'auto')).toBe('lazy');
    expect(chooseRestoreMode(undefined, null, noUffd, 'h2', 'auto')).toBe('eager');
    expect(chooseRestoreMode(undefined, 'eager', lazy, 'h2', 'auto')).toBe('eager');
  });
  test('a cluster default of post-copy steps down where it cannot be had', () => {
    expect(chooseRestoreMode(undefined, 'post-copy', lazy, 'h2', 'auto')).toBe('post-copy');
    expect(chooseRestoreMode(undefined, 'post-copy', lazy, 'h2', 'page-server')).toBe('lazy');
    expect(chooseRestoreMode(undefined, 'post-copy', noUffd, 'h2', 'auto')).toBe('eager');
    // A --user workload restores in its own user namespace, without userfaultfd: eager, and an explicit lazy mode is refused before anything is frozen.
    const asUser = { user: { name: 'nobody', uid: 65534, gid: 65534 } };
    expect(chooseRestoreMode(undefined, null, lazy, 'h2', 'auto', asUser)).toBe('eager');
    expect(chooseRestoreMode(undefined, 'post-copy', lazy, 'h2', 'auto', asUser)).toBe('eager');
    expect(() => chooseRestoreMode('post-copy', null, lazy, 'h2', 'auto', asUser)).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/--user .*unprivileged_userfaultfd/) }));
    expect(() => chooseRestoreMode('lazy', null, lazy, 'h2', 'auto', asUser)).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
    // ...unless the target's kernel lets its user namespace have one (vm.unprivileged_userfaultfd=1).
    const lazyForUsers = { ...lazy, unprivilegedUserfaultfd: true };
    expect(chooseRestoreMode(undefined, null, lazyForUsers, 'h2', 'auto', asUser)).toBe('lazy');
    expect(chooseRestoreMode('post-copy', null, lazyForUsers, 'h2', 'auto', asUser)).toBe('post-copy');
    expect(chooseRestoreMode(undefined, null, { lazyPages: false, unprivilegedUserfaultfd: true }, 'h2', 'auto', asUser)).toBe('eager');
  });
});

describe('planDataPath', () => {
  const both = { pageServerTls: true, pageTunnel: false, lazyDump: true, stream: false };
  const none = { pageServerTls: false, pageTunnel: false, lazyDump: false, stream: false };
  test('pre-copy: the TLS page server where both ends have it, else everything in the image stream', () => {
    expect(planDataPath('auto', 'lazy', both, both, {})).toEqual({ memory: 'page-server', stream: 'auto', pageServer: true, pageServerTls: true, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    expect(planDataPath('auto', 'eager', both, none, {})).toEqual({ memory: 'image', stream: 'auto', pageServer: false, pageServerTls: false, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    expect(planDataPath('nats', 'lazy', both, both, {})).toEqual({ memory: 'image', stream: 'nats', pageServer: false, pageServerTls: false, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    // Asked for by name without TLS on one end: in clear.
    expect(planDataPath('page-server', 'lazy', both, none, {})).toEqual({ memory: 'page-server', stream: 'auto', pageServer: true, pageServerTls: false, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
  });
  test('post-copy: CRIU\'s lazy dump where the source can, not for a workload with a service address', () => {
    expect(planDataPath('auto', 'post-copy', both, both, {}).memory).toBe('lazy-dump');
    expect(planDataPath('direct', 'post-copy', both, both, {}).stream).toBe('direct');
    expect(planDataPath('auto', 'post-copy', none, both, {}).memory).toBe('lazy-rewrite');
    expect(planDataPath('auto', 'post-copy', both, both, { address: '198.18.0.9/24' }).memory).toBe('lazy-rewrite');
  });
});

describe('the page tunnel', () => {
  const tun = { pageServerTls: true, pageTunnel: true, lazyDump: true, stream: false };
  const old = { pageServerTls: true, pageTunnel: false, lazyDump: true, stream: false };
  test('auto takes it where both ends have it, ahead of CRIU\'s TLS page server', () => {
    expect(chooseTransport('auto', tun, tun)).toBe('page-tunnel');
    expect(chooseTransport('auto', tun, old)).toBe('page-server');
    expect(planDataPath('auto', 'lazy', tun, tun, {})).toEqual({ memory: 'page-tunnel', stream: 'auto', pageServer: false, pageServerTls: false, pageTunnel: true, lazyPageTunnel: false, precopyMemory: false });
  });
  test('never in post-copy, and asked for by name only where both ends have it', () => {
    expect(planDataPath('auto', 'post-copy', tun, tun, {})).toMatchObject({ memory: 'lazy-dump', pageTunnel: true, lazyPageTunnel: true });
    // Pinned to NATS, post-copy keeps the relay through NATS; without the tunnel at one end, CRIU to CRIU.
    expect(planDataPath('nats', 'post-copy', tun, tun, {})).toMatchObject({ memory: 'lazy-dump', pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    expect(planDataPath('auto', 'post-copy', tun, old, {})).toMatchObject({ memory: 'lazy-dump', pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    expect(planDataPath('auto', 'post-copy', { ...tun, lazyDump: false }, tun, {})).toMatchObject({ memory: 'lazy-rewrite', lazyPageTunnel: false });
    expect(() => chooseRestoreMode('post-copy', null, { lazyPages: true }, 'h2', 'page-tunnel')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(chooseRestoreMode(undefined, 'post-copy', { lazyPages: true }, 'h2', 'page-tunnel')).toBe('lazy');
    expect(() => chooseTransport('page-tunnel', tun, old)).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
  });
  test('a migration reports the page path it planned before the checkpoint answers', () => {
    expect(plannedTransport(planDataPath('auto', 'lazy', tun, tun, {}), 'nats')).toBe('page-tunnel');
    expect(plannedTransport(planDataPath('auto', 'lazy', old, old, {}), 'nats')).toBe('page-server');
    expect(plannedTransport(planDataPath('direct', 'lazy', tun, tun, {}), 'nats')).toBe('direct');
    expect(plannedTransport(planDataPath('auto', 'post-copy', tun, tun, {}), 'nats')).toBe('nats');
  });
});

describe('the streamed dump', () => {
  const streams = { pageServerTls: true, pageTunnel: true, lazyDump: true, stream: true };
  const tunnelOnly = { ...streams, stream: false };
  test('auto, direct and nats stream the dump where both ends can, ahead of the page tunnel', () => {
    expect(planDataPath('auto', 'lazy', streams, streams, {})).toEqual({ memory: 'stream', stream: 'auto', pageServer: false, pageServerTls: false, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false });
    expect(planDataPath('direct', 'eager', streams, streams, {})).toMatchObject({ memory: 'stream', stream: 'direct' });
    expect(planDataPath('nats', 'lazy', streams, streams, {})).toMatchObject({ memory: 'stream', stream: 'nats' });
    expect(planDataPath('nats', 'lazy', streams, tunnelOnly, {})).toMatchObject({ memory: 'image', stream: 'nats' });
    expect(planDataPath('auto', 'lazy', streams, tunnelOnly, {})).toMatchObject({ memory: 'page-tunnel' });
    expect(planDataPath('auto', 'lazy', tunnelOnly, streams, {})).toMatchObject({ memory: 'page-tunnel' });
  });
  test('not for a page path named, not in post-copy', () => {
    expect(planDataPath('page-tunnel', 'lazy', streams, streams, {})).toMatchObject({ memory: 'page-tunnel' });
    expect(planDataPath('page-server', 'lazy', streams, streams, {})).toMatchObject({ memory: 'page-server' });
    expect(planDataPath('auto', 'post-copy', streams, streams, {}).memory).toBe('lazy-dump');
  });
  test('pre-copies the memory where both ends can, on the streamed dump only', () => {
    const precopy = { ...streams, memoryPrecopy: true };
    expect(planDataPath('auto', 'lazy', precopy, precopy, {})).toMatchObject({ memory: 'stream', precopyMemory: true });
    expect(planDataPath('nats', 'eager', precopy, precopy, {})).toMatchObject({ memory: 'stream', stream: 'nats', precopyMemory: true });
    expect(planDataPath('auto', 'lazy', precopy, streams, {})).toMatchObject({ memory: 'stream', precopyMemory: false });
    expect(planDataPath('auto', 'lazy', streams, precopy, {})).toMatchObject({ memory: 'stream', precopyMemory: false });
    expect(planDataPath('page-tunnel', 'lazy', precopy, precopy, {})).toMatchObject({ memory: 'page-tunnel', precopyMemory: false });
    expect(planDataPath('auto', 'post-copy', precopy, precopy, {})).toMatchObject({ memory: 'lazy-dump', precopyMemory: false });
    expect(planDataPath('auto', 'lazy', { ...precopy, stream: false }, { ...precopy, stream: false }, {})).toMatchObject({ memory: 'page-tunnel', precopyMemory: false });
  });
  test('a streamed migration reports its stream before the checkpoint answers', () => {
    expect(plannedTransport(planDataPath('auto', 'lazy', streams, streams, {}), 'nats')).toBe('nats');
    expect(plannedTransport(planDataPath('direct', 'lazy', streams, streams, {}), 'nats')).toBe('direct');
  });
});
