/**
 * Mutual TLS for CRIU's page-server connection (the `page-server` transport), so memory pages are
 * encrypted and authenticated on the wire like ferry's own stream.
 *
 * CRIU (built with GnuTLS) takes `--tls --tls-cacert --tls-cert --tls-key` on both ends: the page
 * server requires a client certificate signed by the CA ("Certificate is required" otherwise) and
 * the dumping side checks the server's certificate against the same CA and its name against the
 * address it dials. Per migration, the target makes a throwaway CA, signs one server and one client
 * certificate with it and deletes the CA key at once: nothing else can ever be signed by it, and
 * the credentials die with the migration's work dir. The client's certificate and key reach the
 * source only inside the checkpoint request (like the image key: over the authenticated control
 * plane, in memory, never in Redis), so only the agent the coordinator chose can send pages.
 *
 * Certificates are made with the openssl CLI, as runc and the dev cluster drive their tools:
 * Node can parse X.509 but not issue it. EC P-256 keys: generated in milliseconds, and GnuTLS
 * accepts them. All of it happens in the receive step, before the source freezes anything.
 */
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ErrorCode, FerryError, type PageServerClientTls } from '@ferry/protocol';
import { runTool } from '../host/run-tool';

/** A migration lasts minutes; a day covers clock skew between hosts without outliving much. */
const CERT_VALIDITY_DAYS = 1;
const OPENSSL_TIMEOUT_MS = 10_000;
const EC_KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** Files CRIU's --tls-cacert/--tls-cert/--tls-key options name. */
export interface PageServerTlsFiles {
  caCert: string;
  cert: string;
  key: string;
}

/** The criu arguments that turn TLS on with `files`. */
export function criuTlsArgs(files: PageServerTlsFiles): string[] {
  return ['--tls', '--tls-cacert', files.caCert, '--tls-cert', files.cert, '--tls-key', files.key];
}

async function openssl(args: string[]): Promise<void> {
  await runTool('openssl', args, { timeoutMs: OPENSSL_TIMEOUT_MS, code: ErrorCode.FAILED_PRECONDITION, failure: `openssl ${args[0]} failed`, tailChars: 500 });
}

/**
 * Makes a throwaway CA and a server and a client certificate for a page server listening on
 * `address`, in `tlsDir` (made 0700; kept apart from the images dir, whose every file the image
 * stream would send). Returns the server's files (for `criu page-server`) and the client's
 * credentials as PEM text (for the source's `criu dump`; its key crosses the bus only sealed, protocol
 * page-server-tls.ts).
 */
export async function makePageServerTls(tlsDir: string, address: string): Promise<{ server: PageServerTlsFiles; client: PageServerClientTls }> {
  if (isIP(address) === 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `page server address ${address} is not an IP address`);
  await rm(tlsDir, { recursive: true, force: true });
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  await chmod(tlsDir, 0o700);
  const f = (name: string) => join(tlsDir, name);
  const days = String(CERT_VALIDITY_DAYS);
  await openssl(['req', '-x509', ...EC_KEY_ARGS, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', days,
    '-subj', '/CN=ferry page-server CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  for (const role of ['server', 'client'] as const) {
    // CRIU's client checks the server's name against the address it dials: CN and SAN carry it.
    await openssl(['req', ...EC_KEY_ARGS, '-keyout', f(`${role}.key`), '-out', f(`${role}.csr`), '-subj', `/CN=${address}`]);
    await writeFile(
      f(`${role}.ext`),
      `subjectAltName=IP:${address}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n` +
        `extendedKeyUsage=${role === 'server' ? 'serverAuth' : 'clientAuth'}\n`,
    );
    await openssl(['x509', '-req', '-in', f(`${role}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-set_serial', String(Date.now()),
      '-out', f(`${role}.pem`), '-days', days, '-extfile', f(`${role}.ext`)]);
  }
  // Nothing may be signed by this CA again.
  await rm(f('ca.key'), { force: true });
  const client: PageServerClientTls = {
    caCert: await readFile(f('ca.pem'), 'utf8'),
    cert: await readFile(f('client.pem'), 'utf8'),
    key: await readFile(f('client.key'), 'utf8'),
  };
  await rm(f('client.key'), { force: true });
  return { server: { caCert: f('ca.pem'), cert: f('server.pem'), key: f('server.key') }, client };
}

/** Writes opened client credentials (openPageServerTls) into `tlsDir` (0600 files in a 0700 dir). */
export async function writePageServerClientTls(tlsDir: string, tls: PageServerClientTls): Promise<PageServerTlsFiles> {
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  await chmod(tlsDir, 0o700);
  const files = { caCert: join(tlsDir, 'ca.pem'), cert: join(tlsDir, 'client.pem'), key: join(tlsDir, 'client.key') };
  await writeFile(files.caCert, tls.caCert, { mode: 0o600 });
  await writeFile(files.cert, tls.cert, { mode: 0o600 });
  await writeFile(files.key, tls.key, { mode: 0o600 });
  return files;
}

/**
 * Whether this host can run the page server with TLS: its criu was built with GnuTLS (its help
 * lists --tls) and openssl can issue the certificates. Probed once at agent start.
 */
export async function probePageServerTls(criuHelp: string, scratchTlsDir: string): Promise<boolean> {
  if (!/--tls-cacert/.test(criuHelp)) return false;
  try {
    await makePageServerTls(scratchTlsDir, '127.0.0.1');
    return true;
  } catch {
    return false;
  } finally {
    await rm(scratchTlsDir, { recursive: true, force: true });
  }
}
