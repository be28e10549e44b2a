import { randomBytes } from 'node:crypto';
import { SealedSecret, SealKeyPair, sealToAgent } from './sealed-key';

test('a secret sealed to an agent opens with its key pair, for that migration only', () => {
  const agent = SealKeyPair.generate();
  const secret = randomBytes(32);
  const sealed = sealToAgent(secret, agent.publicKey, 'm-1');
  expect(SealedSecret.safeParse(sealed).success).toBe(true);
  // Nothing of the secret shows in what crosses the bus.
  expect(sealed.includes(secret)).toBe(false);
  expect(agent.open(sealed, 'm-1').equals(secret)).toBe(true);
});

test('another agent, another migration, or one changed byte: it does not open', () => {
  const agent = SealKeyPair.generate();
  const other = SealKeyPair.generate();
  const sealed = sealToAgent(randomBytes(32), agent.publicKey, 'm-1');
  expect(() => other.open(sealed, 'm-1')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  expect(() => agent.open(sealed, 'm-2')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  const flipped = Buffer.from(sealed);
  flipped[50] ^= 1;
  expect(() => agent.open(flipped, 'm-1')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
});
