import type { NatsConnection } from 'nats';
import type { CriuInfo } from '@ferry/protocol';
import type { CriuDriver } from '../criu/criu-driver';
import type { WorkDirs } from '../host/work-dir';
import { sourceDataPath, type DataPathContext } from './source-data-paths';

const probe: CriuInfo = { version: '4.2.1', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true, lazyPages: true, pageServerTls: true, lazyDump: true, pageTunnel: true, pipeData: true, stream: true, memoryPrecopy: true, unprivilegedUserfaultfd: false };

function context(criuInfo: CriuInfo = probe): DataPathContext {
  return {
    nc: {} as NatsConnection,
    criu: {} as CriuDriver,
    criuInfo,
    workDirs: {} as WorkDirs,
    hostAddress: '198.18.0.1',
    migrationId: 'm1',
    transferId: 't1',
    imageKey: null,
    dir: '/nonexistent',
    stream: 'auto',
    syscalls: {} as DataPathContext['syscalls'],
    sendImage: () => Promise.reject(new Error('no stream in this test')),
    log: { debug() {}, info() {}, warn() {}, error() {}, child() { return this; } },
  };
}

test('each memory path the coordinator may choose has one executor, reported by name where the result shows it', () => {
  expect(sourceDataPath('image', context()).transportName).toBeNull();
  expect(sourceDataPath('stream', context()).transportName).toBeNull();
  expect(sourceDataPath('page-server', context(), { address: '198.18.0.2', port: 7000 }).transportName).toBe('page-server');
  expect(sourceDataPath('lazy-dump', context()).transportName).toBeNull();
  expect(sourceDataPath('lazy-rewrite', context()).transportName).toBeNull();
});

test('a path this host cannot carry out fails clearly instead of quietly taking another', () => {
  expect(() => sourceDataPath('lazy-dump', context({ ...probe, lazyDump: false }))).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
  expect(() => sourceDataPath('stream', context({ ...probe, stream: false }))).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
  expect(() => sourceDataPath('page-server', context())).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
});
