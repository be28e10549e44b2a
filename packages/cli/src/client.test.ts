import { redactNatsUrl } from './client';

test('a NATS URL in an error message never shows its password or token', () => {
  expect(redactNatsUrl('nats://ferry:s3cret@10.0.0.1:4222')).toBe('nats://ferry:***@10.0.0.1:4222');
  expect(redactNatsUrl('tls://t0ken@nats.example:4222,nats://u:p@b:4222')).toBe('tls://***@nats.example:4222,nats://u:***@b:4222');
  expect(redactNatsUrl('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
});
