import { localFilesRefusal, rootDirsRefusal } from './local-file-check';

test('the target has every file, the same: no refusal', () => {
  expect(localFilesRefusal('web', 'h1', 'h2', { missing: [], different: [] })).toBeNull();
});

test('names what is missing and what differs, and says what to do instead', () => {
  const err = localFilesRefusal('web', 'h1', 'h2', {
    missing: ['/srv/data/x'],
    different: [
      { path: '/srv/y', why: 'sha256' },
      { path: '/srv/z', why: 'type' },
    ],
  });
  expect(err?.code).toBe('FAILED_PRECONDITION');
  expect(err?.message).toContain("web holds open 3 file(s) on h1's local disk that h2 does not have as the same file");
  expect(err?.message).toContain('only on h1: /srv/data/x; differs on h2 (sha256): /srv/y; differs on h2 (not a regular file): /srv/z;');
  expect(err?.message).toMatch(/ferry run --local-dir.*cluster filesystem/);
  expect(err?.details).toEqual(['only on h1: /srv/data/x', 'differs on h2 (sha256): /srv/y', 'differs on h2 (not a regular file): /srv/z']);
});

test('names ten in the message and at most 200 in the details (the error body bound), saying how many more', () => {
  const missing = Array.from({ length: 500 }, (_, i) => `/srv/f${i}`);
  const err = localFilesRefusal('web', 'h1', 'h2', { missing, different: [] })!;
  expect(err.message).toContain('only on h1: /srv/f9; and 490 more;');
  expect(err.message).not.toContain('/srv/f10;');
  expect(err.details).toHaveLength(200);
  expect(err.details[198]).toBe('only on h1: /srv/f198');
  expect(err.details[199]).toBe('and 301 more');
});

test("directories the workload's own root binds, missing on the target: named, with what to do", () => {
  expect(rootDirsRefusal('web', 'h1', 'h2', { missingDirs: [] })).toBeNull();
  const err = rootDirsRefusal('web', 'h1', 'h2', { missingDirs: ['/work', '/data'] });
  expect(err).toMatchObject({
    code: 'FAILED_PRECONDITION',
    message: "web's own root binds /work, /data from h1, which h2 does not have as directories: create them on h2, or run the workload with --host-root",
    details: ['/work', '/data'],
  });
});
