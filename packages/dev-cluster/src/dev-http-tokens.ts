/**
 * The dev cluster's HTTP API tokens: `dev up` makes a viewer and an operator token per cluster
 * (fresh each time), writes each to its own 0600 file in `<state dir>/http-auth/` (0700), and
 * the coordinator's tokens file (their SHA-256 only) beside them; cluster.json records where
 * (`http`). Tests, the CLI and people read the token files; nobody types a token.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { hashHttpToken, httpTokensFileText, newHttpToken } from '@ferry/coordinator';
import { DEV_STATE_ROOT } from './dev';

/** Where a dev cluster's coordinator serves HTTP, and its token files. */
export interface DevHttpAccess {
  /** e.g. http://127.0.0.1:9464; null when the coordinator serves no HTTP. */
  url: string | null;
  /** The coordinator's FERRY_HTTP_TOKENS (hashes only). */
  tokensFile: string;
  /** A file holding the viewer token (read-only: API reads, dashboard, event stream, /metrics). */
  viewerTokenFile: string;
  /** A file holding the operator token (everything). */
  operatorTokenFile: string;
}

/** The 0700 directory of a cluster's HTTP tokens. */
export function devHttpAuthDir(name: string): string {
  return join(DEV_STATE_ROOT, name, 'http-auth');
}

/** The token files of cluster `name`, whether or not they exist. */
export function devHttpTokenFiles(name: string): Omit<DevHttpAccess, 'url'> {
  const dir = devHttpAuthDir(name);
  return { tokensFile: join(dir, 'tokens.json'), viewerTokenFile: join(dir, 'viewer.token'), operatorTokenFile: join(dir, 'operator.token') };
}

/** Makes fresh viewer and operator tokens for cluster `name` and writes their files; returns the paths. */
export function writeDevHttpTokens(name: string): Omit<DevHttpAccess, 'url'> {
  const dir = devHttpAuthDir(name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const write = (file: string, text: string) => {
    fs.rmSync(file, { force: true });
    fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
  };
  const viewer = newHttpToken();
  const operator = newHttpToken();
  const files = devHttpTokenFiles(name);
  write(files.viewerTokenFile, `${viewer}\n`);
  write(files.operatorTokenFile, `${operator}\n`);
  write(
    files.tokensFile,
    httpTokensFileText([
      { name: 'dev-viewer', role: 'viewer', sha256: hashHttpToken(viewer) },
      { name: 'dev-operator', role: 'operator', sha256: hashHttpToken(operator) },
    ]),
  );
  return files;
}

/** Reads a token file written by writeDevHttpTokens. */
export function readDevHttpToken(file: string): string {
  return fs.readFileSync(file, 'utf8').trim();
}
