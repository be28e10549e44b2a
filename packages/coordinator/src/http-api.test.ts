import type { IncomingMessage } from 'node:http';
import { crossSiteProblem } from './http-api';

const req = (headers: Record<string, string>) => ({ headers: { host: '127.0.0.1:9464', ...headers } }) as unknown as Pick<IncomingMessage, 'headers'>;

test('state-changing requests from another site are refused, whatever their body', () => {
  // A cross-site form or no-cors fetch: text/plain, with the attacking page's origin.
  expect(crossSiteProblem(req({ origin: 'https://evil.example', 'content-type': 'text/plain', 'content-length': '40' }))).toMatchObject({ status: 403 });
  expect(crossSiteProblem(req({ origin: 'null', 'content-length': '0' }))).toMatchObject({ status: 403 });
  expect(crossSiteProblem(req({ 'sec-fetch-site': 'cross-site' }))).toMatchObject({ status: 403 });
  // Same host, other port: another origin.
  expect(crossSiteProblem(req({ origin: 'http://127.0.0.1:8080' }))).toMatchObject({ status: 403 });
});

test('a body that is not JSON is refused (415); the dashboard, the CLI, curl and scripts get through', () => {
  expect(crossSiteProblem(req({ 'content-type': 'text/plain', 'content-length': '12' }))).toMatchObject({ status: 415 });
  expect(crossSiteProblem(req({ 'content-type': 'application/x-www-form-urlencoded', 'transfer-encoding': 'chunked' }))).toMatchObject({ status: 415 });
  expect(crossSiteProblem(req({ origin: 'http://127.0.0.1:9464', 'sec-fetch-site': 'same-origin', 'content-type': 'application/json', 'content-length': '20' }))).toBeNull();
  expect(crossSiteProblem(req({ 'content-type': 'application/json; charset=utf-8', 'content-length': '20' }))).toBeNull();
  expect(crossSiteProblem(req({}))).toBeNull();
});
