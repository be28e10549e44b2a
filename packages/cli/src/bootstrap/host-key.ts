/**
 * Host key verification for SSH bootstrap: a server's key is accepted only if a known_hosts file
 * lists it for that host, or if it matches a fingerprint the operator pinned. An unknown or
 * changed key is refused with the reason and the key's fingerprint, never accepted on first use.
 */
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode, FerryError } from '@ferry/protocol';

/** How a server's host key is checked: against a known_hosts file, or a pinned `SHA256:...` fingerprint. */
export type HostKeyPolicy = { kind: 'known-hosts'; file: string } | { kind: 'fingerprint'; fingerprint: string };

/** The outcome of checking one presented key. */
export type HostKeyVerdict = { accepted: true } | { accepted: false; reason: string };

/** One usable line of a known_hosts file. */
export interface KnownHostsEntry {
  /** `@revoked` lines refuse the key; `@cert-authority` lines are skipped (ferry does not do SSH certificates). */
  marker: 'revoked' | null;
  /** Comma-separated patterns, or one `|1|salt|hash` hashed name. */
  hosts: string;
  keyType: string;
  /** The key blob (base64-decoded), compared byte for byte with what the server presents. */
  key: Buffer;
}

const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** OpenSSH's fingerprint of a key blob: `SHA256:` + unpadded base64 of its SHA-256 (what `ssh-keygen -lf` prints). */
export function sshFingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

/** Validates a pinned fingerprint's syntax (INVALID_ARGUMENT otherwise). */
export function assertFingerprint(fingerprint: string): void {
  if (!FINGERPRINT_PATTERN.test(fingerprint)) {
    throw new FerryError(
      ErrorCode.INVALID_ARGUMENT,
      `'${fingerprint}' is not an SSH SHA256 fingerprint (expected SHA256: and 43 base64 characters, as \`ssh-keygen -lf KEY.pub\` prints)`,
    );
  }
}

/** Parses known_hosts text; comments, blank and malformed lines are skipped, as OpenSSH does. */
export function parseKnownHosts(text: string): KnownHostsEntry[] {
  const entries: KnownHostsEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHostsEntry['marker'] = null;
    if (fields[0].startsWith('@')) {
      const m = fields.shift();
      if (m === '@revoked') marker = 'revoked';
      else continue;
    }
    const [hosts, keyType, keyText] = fields;
    if (hosts === undefined || keyType === undefined || keyText === undefined) continue;
    const key = Buffer.from(keyText, 'base64');
    if (key.length === 0) continue;
    entries.push({ marker, hosts, keyType, key });
  }
  return entries;
}

/** The name OpenSSH looks up: `host`, or `[host]:port` when the port is not 22. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Does a known_hosts host field match this name? Handles hashed names, `*`/`?` globs and `!` negation. */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (salt === undefined || hash === undefined) return false;
    const digest = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return digest === hash;
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    const negated = pattern.startsWith('!');
    const glob = negated ? pattern.slice(1) : pattern;
    const regex = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
    if (regex.test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** Checks a presented key blob against known_hosts entries for `host:port`. Pure. */
export function verifyAgainstKnownHosts(entries: KnownHostsEntry[], host: string, port: number, keyBlob: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const forHost = entries.filter((e) => hostFieldMatches(e.hosts, name));
  if (forHost.some((e) => e.marker === 'revoked' && e.key.equals(keyBlob))) {
    return { accepted: false, reason: `the host key of ${name} (${sshFingerprint(keyBlob)}) is marked @revoked` };
  }
  const listed = forHost.filter((e) => e.marker === null);
  if (listed.some((e) => e.key.equals(keyBlob))) return { accepted: true };
  if (listed.length > 0) {
    return {
      accepted: false,
      reason:
        `HOST KEY MISMATCH for ${name}: it presented ${sshFingerprint(keyBlob)}, but known_hosts lists ` +
        `${listed.map((e) => `${e.keyType} ${sshFingerprint(e.key)}`).join(', ')} (a changed host, or someone in between)`,
    };
  }
  return {
    accepted: false,
    reason: `${name} is not in known_hosts; its key is ${sshFingerprint(keyBlob)} — check it out of band, then add it to known_hosts or pass --fingerprint`,
  };
}

/** Checks a presented key blob against a policy. Reads the known_hosts file (NOT_FOUND if missing). */
export function verifyHostKey(policy: HostKeyPolicy, host: string, port: number, keyBlob: Buffer): HostKeyVerdict {
  if (policy.kind === 'fingerprint') {
    const presented = sshFingerprint(keyBlob);
    return presented === policy.fingerprint
      ? { accepted: true }
      : { accepted: false, reason: `host key of ${knownHostsName(host, port)} is ${presented}, not the pinned ${policy.fingerprint}` };
  }
  let text: string;
  try {
    text = readFileSync(policy.file, 'utf8');
  } catch (err) {
    throw new FerryError(ErrorCode.NOT_FOUND, `cannot read known_hosts file ${policy.file}`, { cause: err });
  }
  return verifyAgainstKnownHosts(parseKnownHosts(text), host, port, keyBlob);
}
