import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFilesystemsFile, mountsForMigration, resolveMounts } from './filesystems';

const shared = { name: 'shared', type: 'sshfs' as const, source: 'root@198.18.0.2:/srv', options: { IdentityFile: '/k' } };

test('resolves names to full specs at the asked paths', () => {
  expect(resolveMounts([shared], [{ fs: 'shared', path: '/data' }])).toEqual([{ ...shared, path: '/data' }]);
});

test('an unknown filesystem is NOT_FOUND naming the known ones; two mounts at one path are refused', () => {
  expect(() => resolveMounts([shared], [{ fs: 'nope', path: '/data' }])).toThrow(expect.objectContaining({ code: 'NOT_FOUND', message: expect.stringContaining('shared') }));
  expect(() => resolveMounts([shared], [{ fs: 'shared', path: '/a' }, { fs: 'shared', path: '/a' }])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
});

test('the filesystems file is validated', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fs-'));
  try {
    const file = join(dir, 'fs.json');
    writeFileSync(file, JSON.stringify([shared, { name: 'n', type: 'nfs', source: 'files:/export', options: { vers: '4.2' } }]));
    expect(loadFilesystemsFile(file).map((f) => f.name)).toEqual(['shared', 'n']);
    writeFileSync(file, JSON.stringify([{ ...shared, type: 'ceph' }]));
    expect(() => loadFilesystemsFile(file)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    writeFileSync(file, JSON.stringify([{ ...shared, options: { o: 'a,b' } }]));
    expect(() => loadFilesystemsFile(file)).toThrow(/commas/);
    writeFileSync(file, JSON.stringify([shared, shared]));
    expect(() => loadFilesystemsFile(file)).toThrow(/twice/);
    expect(() => loadFilesystemsFile(join(dir, 'missing.json'))).toThrow(/cannot read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a migration\'s mounts come from the configuration by name, never as an agent reported them (an sshfs ssh_command= runs a program as root)', () => {
  const reported = { ...shared, source: 'evil@198.18.0.9:/', options: { ssh_command: 'sh -c "id > /tmp/pwned"' }, path: '/data' };
  expect(mountsForMigration([shared], [reported])).toEqual([{ ...shared, path: '/data' }]);
  expect(() => mountsForMigration([shared], [{ ...reported, name: 'unknown' }])).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
});
