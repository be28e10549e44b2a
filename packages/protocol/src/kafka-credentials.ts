/**
 * The SASL credentials a Kafka client of ferry (the coordinator, an autoscaler) authenticates
 * with, one JSON file named by `FERRY_KAFKA_CREDENTIALS` (read in each app's main.ts):
 *
 *   {"v": 1, "mechanism": "scram-sha-512", "username": "coordinator", "password": "..."}
 *
 * `mechanism` is what the brokers offer (`scram-sha-512` in the dev cluster; `scram-sha-256` or
 * `plain` elsewhere; `plain` only over TLS). The value has kafkajs's `sasl` option shape. The file
 * must not be readable by group or others. TLS to the brokers is set apart (the CA is not secret).
 */
import { z } from 'zod';
import { ErrorCode, FerryError } from './errors';
import { readPrivateJsonFile } from './private-file';

export const KafkaCredentials = z.strictObject({
  v: z.literal(1),
  mechanism: z.enum(['scram-sha-512', 'scram-sha-256', 'plain']),
  username: z.string().regex(/^[A-Za-z0-9_.@-]{1,128}$/, 'username is 1-128 letters, digits, _ . @ -'),
  password: z.string().min(16).max(256),
});
export type KafkaCredentials = z.infer<typeof KafkaCredentials>;

/** Reads and checks a Kafka credentials file; FAILED_PRECONDITION otherwise (never quoting the password). */
export function loadKafkaCredentials(file: string): KafkaCredentials {
  const parsed = KafkaCredentials.safeParse(readPrivateJsonFile(file, 'Kafka credentials file'));
  if (!parsed.success) {
    const fields = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`);
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `Kafka credentials file ${file} is invalid: ${fields.join('; ')}`);
  }
  return parsed.data;
}
