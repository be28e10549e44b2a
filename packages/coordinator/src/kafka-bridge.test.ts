import { DEFAULT_MAX_REQUEST_AGE_MS, staleRequestProblem } from './kafka-bridge';

test('a request older than the freshness window, or without a timestamp, is not acted on', () => {
  const now = 1_800_000_000_000;
  expect(staleRequestProblem(now - 5_000, now, DEFAULT_MAX_REQUEST_AGE_MS)).toBeNull();
  expect(staleRequestProblem(now - DEFAULT_MAX_REQUEST_AGE_MS - 1, now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/not replayed/);
  expect(staleRequestProblem(Number.NaN, now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/no timestamp/);
});
