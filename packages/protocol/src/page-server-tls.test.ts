import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { openPageServerTls, pageServerTlsKey, PageServerTls, sealPageServerTls } from './page-server-tls';

const pem = (kind: string) => `-----BEGIN ${kind}-----\n${randomBytes(48).toString('base64')}\n-----END ${kind}-----\n`;
const clientKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
const client = { caCert: pem('CERTIFICATE'), cert: pem('CERTIFICATE'), key: clientKey };

test('the client key travels sealed under a key derived from the image key, and opens for that migration', () => {
  const imageKey = randomBytes(32);
  const boxKey = pageServerTlsKey(imageKey);
  // Derived, never the image key itself.
  expect(boxKey.equals(imageKey)).toBe(false);
  const wire = sealPageServerTls(client, boxKey, 'm-1');
  expect(PageServerTls.safeParse(wire).success).toBe(true);
  // Nothing of the key shows in what crosses the bus; the certificates are public and stay readable.
  const onTheBus = JSON.stringify({ ...wire, sealedKey: Buffer.from(wire.sealedKey).toString('latin1') });
  expect(onTheBus).not.toContain('PRIVATE KEY');
  expect(Buffer.from(wire.sealedKey).includes(Buffer.from(clientKey.split('\n')[1]))).toBe(false);
  expect(wire).toMatchObject({ caCert: client.caCert, cert: client.cert });
  expect(openPageServerTls(wire, pageServerTlsKey(imageKey), 'm-1')).toEqual(client);
});

test('another migration, another image key, a changed byte or a cut box: INVALID_ARGUMENT, nothing opened', () => {
  const boxKey = pageServerTlsKey(randomBytes(32));
  const wire = sealPageServerTls(client, boxKey, 'm-1');
  const refused = expect.objectContaining({ code: 'INVALID_ARGUMENT' });
  expect(() => openPageServerTls(wire, boxKey, 'm-2')).toThrow(refused);
  expect(() => openPageServerTls(wire, pageServerTlsKey(randomBytes(32)), 'm-1')).toThrow(refused);
  for (const at of [0, 20, Buffer.from(wire.sealedKey).length - 1]) {
    const flipped = Buffer.from(wire.sealedKey);
    flipped[at] ^= 1;
    expect(() => openPageServerTls({ ...wire, sealedKey: flipped }, boxKey, 'm-1')).toThrow(refused);
  }
  expect(() => openPageServerTls({ ...wire, sealedKey: Buffer.from(wire.sealedKey).subarray(0, 40) }, boxKey, 'm-1')).toThrow(refused);
});

test('the schema refuses a clear key, an unbounded box and non-PEM certificates', () => {
  const wire = sealPageServerTls(client, pageServerTlsKey(randomBytes(32)), 'm-1');
  // The old clear form is no longer accepted: a peer cannot make us send or take a key in clear.
  expect(PageServerTls.safeParse({ caCert: client.caCert, cert: client.cert, key: client.key }).success).toBe(false);
  expect(PageServerTls.safeParse({ ...wire, sealedKey: randomBytes(9000) }).success).toBe(false);
  expect(PageServerTls.safeParse({ ...wire, sealedKey: randomBytes(10) }).success).toBe(false);
  expect(PageServerTls.safeParse({ ...wire, cert: 'not pem' }).success).toBe(false);
  expect(PageServerTls.safeParse({ ...wire, caCert: `-----BEGIN ${'A'.repeat(9000)}` }).success).toBe(false);
});
