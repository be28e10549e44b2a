import { bothPageServerTls, chooseRestoreMode, chooseTransport, firstFrameTimeoutMs, MIN_DUMP_BYTES_PER_S } from './transport-choice';

const tls = { pageServerTls: true };
const clear = { pageServerTls: false };

test('auto takes the page server only when both hosts can run it over TLS', () => {
  expect(chooseTransport('auto', tls, tls)).toBe('page-server');
  expect(chooseTransport('auto', tls, clear)).toBe('auto');
  expect(chooseTransport('auto', clear, tls)).toBe('auto');
  expect(chooseTransport('auto', clear, clear)).toBe('auto');
});

test('an explicit transport is kept whatever the probes say', () => {
  for (const wanted of ['direct', 'nats', 'page-server'] as const) {
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
  });
});
