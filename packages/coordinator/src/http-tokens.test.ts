import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@ferry/protocol';
import { HttpAuthenticator } from './http-auth';
import { HTTP_TOKEN_PREFIX, hashHttpToken, httpTokensFileText, loadHttpTokensFile, newHttpToken } from './http-tokens';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-http-tokens-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function writeTokens(file: string, text: string, mode = 0o600): void {
  writeFileSync(file, text, { mode });
  chmodSync(file, mode);
}

test('tokens are 256 random bits with a prefix; the file keeps only their SHA-256', () => {
  const a = newHttpToken();
  expect(a).toMatch(new RegExp(`^${HTTP_TOKEN_PREFIX}[A-Za-z0-9_-]{43}$`));
  expect(newHttpToken()).not.toBe(a);
  const text = httpTokensFileText([{ name: 'alice', role: 'operator', sha256: hashHttpToken(a) }]);
  expect(text).not.toContain(a);
  const file = join(dir, 'tokens.json');
  writeTokens(file, text);
  expect(loadHttpTokensFile(file)).toEqual({ v: 1, tokens: [{ name: 'alice', role: 'operator', sha256: hashHttpToken(a) }] });
});

test('a tokens file readable by group or others, malformed, or listing a name or a token twice is refused', () => {
  const file = join(dir, 'tokens.json');
  const entry = { name: 'bob', role: 'viewer' as const, sha256: hashHttpToken('x') };
  writeTokens(file, httpTokensFileText([entry]), 0o640);
  expect(() => loadHttpTokensFile(file)).toThrow(/mode 640.*chmod 600/);
  writeTokens(file, '{"v":1,"tokens":[{"name":"bob","role":"admin","sha256":"00"}]}');
  expect(() => loadHttpTokensFile(file)).toThrow(/invalid: tokens\.0\.role/);
  writeTokens(file, 'not json');
  expect(() => loadHttpTokensFile(file)).toThrow(/not valid JSON/);
  writeTokens(file, JSON.stringify({ v: 1, tokens: [entry, { ...entry, sha256: hashHttpToken('y') }] }));
  expect(() => loadHttpTokensFile(file)).toThrow(/names bob twice/);
  writeTokens(file, JSON.stringify({ v: 1, tokens: [entry, { ...entry, name: 'carol', role: 'operator' }] }));
  expect(() => loadHttpTokensFile(file)).toThrow(/same token twice/);
  expect(() => loadHttpTokensFile(join(dir, 'missing.json'))).toThrow(/cannot read/);
});

test('the authenticator knows listed tokens, refuses others, and follows rotation without a restart', () => {
  const file = join(dir, 'tokens.json');
  const viewer = newHttpToken();
  const operator = newHttpToken();
  writeTokens(file, httpTokensFileText([
    { name: 'prometheus', role: 'viewer', sha256: hashHttpToken(viewer) },
    { name: 'alice', role: 'operator', sha256: hashHttpToken(operator) },
  ]));
  const auth = new HttpAuthenticator(file);
  expect(auth.authenticate(`Bearer ${viewer}`)).toEqual({ name: 'prometheus', role: 'viewer' });
  expect(auth.authenticate(`bearer ${operator}`)).toEqual({ name: 'alice', role: 'operator' });
  const code = (f: () => unknown) => {
    try {
      f();
      return 'ok';
    } catch (err) {
      return `${(err as { code: string }).code}: ${(err as Error).message}`;
    }
  };
  expect(code(() => auth.authenticate(undefined))).toMatch(/^UNAUTHENTICATED: a bearer token is required/);
  expect(code(() => auth.authenticate(`Basic ${viewer}`))).toMatch(/^UNAUTHENTICATED: .*Bearer <token>/);
  expect(code(() => auth.authenticate(`Bearer ${newHttpToken()}`))).toBe('UNAUTHENTICATED: unknown or revoked token');
  expect(code(() => auth.authenticate(`Bearer ${viewer}x`))).toBe('UNAUTHENTICATED: unknown or revoked token');
  const v = auth.authenticate(`Bearer ${viewer}`);
  expect(code(() => auth.authorize(v, 'viewer', 'GET /v1/hosts'))).toBe('ok');
  expect(code(() => auth.authorize(v, 'operator', 'POST /v1/migrations'))).toBe('PERMISSION_DENIED: refused: token prometheus has role viewer; POST /v1/migrations needs the operator role');

  // Rotation: alice's token replaced by a new one; the old one stops working at once.
  const rotated = newHttpToken();
  writeTokens(file, httpTokensFileText([
    { name: 'prometheus', role: 'viewer', sha256: hashHttpToken(viewer) },
    { name: 'alice', role: 'operator', sha256: hashHttpToken(rotated) },
  ]));
  auth.reload();
  expect(code(() => auth.authenticate(`Bearer ${operator}`))).toBe('UNAUTHENTICATED: unknown or revoked token');
  expect(auth.authenticate(`Bearer ${rotated}`).name).toBe('alice');

  // A broken file leaves nothing valid (a revoked token must not come back), and says so.
  chmodSync(file, 0o644);
  auth.reload();
  expect(code(() => auth.authenticate(`Bearer ${rotated}`))).toMatch(/^UNAVAILABLE: .*tokens file is unusable/);
  chmodSync(file, 0o600);
  auth.reload();
  expect(auth.authenticate(`Bearer ${rotated}`).name).toBe('alice');
});

test('the authenticator re-reads a changed file by itself', async () => {
  const file = join(dir, 'tokens.json');
  const first = newHttpToken();
  writeTokens(file, httpTokensFileText([{ name: 'a', role: 'viewer', sha256: hashHttpToken(first) }]));
  const auth = new HttpAuthenticator(file);
  auth.watch(50);
  try {
    const second = newHttpToken();
    writeTokens(file, httpTokensFileText([{ name: 'b', role: 'operator', sha256: hashHttpToken(second) }]));
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      try {
        if (auth.authenticate(`Bearer ${second}`).name === 'b') break;
      } catch {
        // not yet seen
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(auth.authenticate(`Bearer ${second}`)).toEqual({ name: 'b', role: 'operator' });
    expect(() => auth.authenticate(`Bearer ${first}`)).toThrow(expect.objectContaining({ code: ErrorCode.UNAUTHENTICATED }));
  } finally {
    auth.close();
  }
});

test('without a tokens file every token is refused, saying how to configure one', () => {
  const auth = new HttpAuthenticator(null);
  expect(auth.configured).toBe(false);
  expect(() => auth.authenticate(`Bearer ${newHttpToken()}`)).toThrow(/no HTTP tokens configured.*FERRY_HTTP_TOKENS/);
});
