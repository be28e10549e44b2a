/**
 * What `ferry hosts add` remembers about a host it bootstrapped (how to reach it, where it
 * installed, which service manager), so `ferry hosts remove NAME` needs nothing but the name.
 * One JSON file per host in the CLI's state directory; no secrets in it (key paths, not keys).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import type { ServiceManager } from './agent-install';
import type { HostKeyPolicy } from './host-key';
import type { SshTarget } from './ssh-session';

export interface BootstrapRecord {
  formatVersion: 1;
  name: string;
  ssh: SshTarget;
  privateKeyFile: string;
  hostKey: HostKeyPolicy;
  prefix: string;
  configDir: string;
  serviceManager: ServiceManager;
  installedAt: string;
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function recordFile(stateDir: string, name: string): string {
  if (!NAME_PATTERN.test(name)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid host name '${name}'`);
  return path.join(stateDir, `${name}.json`);
}

/** Writes the record atomically (0600). */
export function saveBootstrapRecord(stateDir: string, record: BootstrapRecord): void {
  const file = recordFile(stateDir, record.name);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The record of a bootstrapped host, or null if none. */
export function loadBootstrapRecord(stateDir: string, name: string): BootstrapRecord | null {
  const file = recordFile(stateDir, name);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FerryError(ErrorCode.INTERNAL, `cannot read ${file}`, { cause: err });
  }
  const record = JSON.parse(text) as BootstrapRecord;
  if (record.formatVersion !== 1 || record.name !== name) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `unexpected contents in ${file}; remove it by hand`);
  }
  return record;
}

export function deleteBootstrapRecord(stateDir: string, name: string): void {
  fs.rmSync(recordFile(stateDir, name), { force: true });
}
