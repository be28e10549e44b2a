/**
 * A JSON or YAML document as an integration test reads it: walked by path straight into expect(),
 * where a wrong path fails the assertion. Its shapes are many (each command's `--json`, each HTTP
 * answer, each rendered Kubernetes kind); the unit tests hold them to the protocol's schemas.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- documents of many shapes, read by path only in assertions (see above)
export type JsonDoc = any;
