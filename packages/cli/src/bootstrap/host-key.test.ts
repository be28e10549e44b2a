import { createHmac, randomBytes } from 'node:crypto';
import { hostFieldMatches, parseKnownHosts, sshFingerprint, verifyAgainstKnownHosts, verifyHostKey, assertFingerprint } from './host-key';

const keyA = Buffer.from('AAAAC3NzaC1lZDI1NTE5AAAAIG7Yb2xHc0JzK2xq3Xz7n8mWJd6m4sFq0pW7Vw1zq6Yz', 'base64');
const keyB = Buffer.from('AAAAC3NzaC1lZDI1NTE5AAAAIB3sA1rKx8o4G0pYx5Qm9rV2uQ7eTt8wXk1yH6dL0aZc', 'base64');

test('fingerprints match ssh-keygen -lf format', () => {
  const fp = sshFingerprint(keyA);
  expect(fp).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  expect(() => assertFingerprint(fp)).not.toThrow();
  expect(() => assertFingerprint('MD5:aa:bb')).toThrow(/not an SSH SHA256 fingerprint/);
});

test('known_hosts: plain, port, hashed, glob, negation, revoked, mismatch and unknown', () => {
  const salt = randomBytes(20);
  const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('10.0.0.7').digest('base64')}`;
  const text = [
    '# comment',
    `10.0.0.5,node-a ssh-ed25519 ${keyA.toString('base64')}`,
    `[10.0.0.6]:2222 ssh-ed25519 ${keyA.toString('base64')}`,
    `${hashed} ssh-ed25519 ${keyB.toString('base64')}`,
    `*.example.org,!bad.example.org ssh-ed25519 ${keyB.toString('base64')}`,
    `@revoked 10.0.0.9 ssh-ed25519 ${keyA.toString('base64')}`,
    `10.0.0.9 ssh-ed25519 ${keyA.toString('base64')}`,
    '@cert-authority * ssh-ed25519 AAAA',
    'garbage',
  ].join('\n');
  const entries = parseKnownHosts(text);
  expect(entries).toHaveLength(6);
  expect(verifyAgainstKnownHosts(entries, '10.0.0.5', 22, keyA)).toEqual({ accepted: true });
  expect(verifyAgainstKnownHosts(entries, 'node-a', 22, keyA)).toEqual({ accepted: true });
  expect(verifyAgainstKnownHosts(entries, '10.0.0.6', 2222, keyA)).toEqual({ accepted: true });
  expect(verifyAgainstKnownHosts(entries, '10.0.0.6', 22, keyA)).toMatchObject({ accepted: false, reason: expect.stringContaining('not in known_hosts') });
  expect(verifyAgainstKnownHosts(entries, '10.0.0.7', 22, keyB)).toEqual({ accepted: true });
  expect(verifyAgainstKnownHosts(entries, 'a.example.org', 22, keyB)).toEqual({ accepted: true });
  expect(hostFieldMatches('*.example.org,!bad.example.org', 'bad.example.org')).toBe(false);
  const mismatch = verifyAgainstKnownHosts(entries, '10.0.0.5', 22, keyB);
  expect(mismatch).toMatchObject({ accepted: false, reason: expect.stringContaining('HOST KEY MISMATCH') });
  expect(verifyAgainstKnownHosts(entries, '10.0.0.9', 22, keyA)).toMatchObject({ accepted: false, reason: expect.stringContaining('@revoked') });
});

test('pinned fingerprint policy', () => {
  expect(verifyHostKey({ kind: 'fingerprint', fingerprint: sshFingerprint(keyA) }, 'h', 22, keyA)).toEqual({ accepted: true });
  expect(verifyHostKey({ kind: 'fingerprint', fingerprint: sshFingerprint(keyA) }, 'h', 22, keyB)).toMatchObject({ accepted: false });
  expect(() => verifyHostKey({ kind: 'known-hosts', file: '/nonexistent/known_hosts' }, 'h', 22, keyA)).toThrow(/cannot read known_hosts/);
});
