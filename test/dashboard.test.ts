/**
 * The operators' dashboard in a real browser (Debian's headless Chromium driven by playwright-core)
 * against a real cluster: the cluster view, a live migration started from the Workloads view and
 * watched in the Migrations view (progress, then its phase timeline), cordoning a host with the
 * confirmation dialog (mouse and keyboard), signing in with a token (a wrong one refused) and a
 * viewer's token leaving every action disabled. Screenshots of each view go to test-artifacts/dashboard/.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { decode, subjects } from '@ferry/protocol';
import { REPO, startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(240_000);

const CHROMIUM = '/usr/bin/chromium';
/** Chromium's own connections to the internet are refused here; these flags keep it from trying. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SHOTS = join(REPO, 'test-artifacts', 'dashboard');
/** Enough memory that the image takes a few progress intervals (250 ms) to cross. */
const WORKLOAD_MIB = 128;

let cluster: TestCluster;
let context: BrowserContext;
let profileDir: string;
const workloads: CounterWorkload[] = [];

beforeAll(async () => {
  cluster = await startTestCluster('tdash', 215);
  await mkdir(SHOTS, { recursive: true });
  profileDir = await mkdtemp(join(tmpdir(), 'ferry-chromium-'));
  context = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 900 } });
});

afterAll(async () => {
  await context?.close().catch(() => undefined);
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
  await cluster?.stop();
  for (const w of workloads) await w.remove();
});

async function hostsFromCli(): Promise<Array<{ name: string; cordoned: boolean }>> {
  const r = await cluster.ferry(['hosts', '--json']);
  expect(r.code).toBe(0);
  return r.json;
}

test('cluster view, a migration from the UI with live progress and its timeline, cordon with confirmation', async () => {
  const w = await CounterWorkload.create();
  workloads.push(w);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'dash', '--json', '--', ...w.argv(WORKLOAD_MIB)]);
  expect(run.code).toBe(0);
  await w.advancesPast(20, 60_000);

  const page = context.pages()[0] ?? (await context.newPage());
  const offOrigin: string[] = [];
  const requestUrls: string[] = [];
  page.on('request', (r) => {
    requestUrls.push(r.url());
    if (!r.url().startsWith(cluster.httpUrl)) offOrigin.push(r.url());
  });
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

  // ---- Sign in: the page asks for a token; a wrong one is refused with the server's reason ----
  const res = await page.goto(`${cluster.httpUrl}/`);
  expect(res?.status()).toBe(200);
  expect(res?.headers()['content-security-policy']).toContain("default-src 'none'");
  const login = page.getByRole('dialog', { name: 'Sign in to ferry' });
  await login.waitFor();
  await login.getByLabel('Access token').fill('ferry_not-a-real-token');
  await login.getByRole('button', { name: 'Sign in' }).click();
  await waitFor('the refusal shown', async () => (await page.locator('#login-error').innerText()) === 'unknown or revoked token');
  await page.screenshot({ path: join(SHOTS, 'sign-in.png') });
  await login.getByLabel('Access token').fill(cluster.httpTokens.operator);
  await login.getByRole('button', { name: 'Sign in' }).click();
  await login.waitFor({ state: 'hidden' });
  expect(await page.locator('#whoami').innerText()).toBe('dev-operator (operator)');
  // Never in a URL (where logs and history would keep it): only in this tab's sessionStorage.
  expect(page.url()).not.toContain(cluster.httpTokens.operator);

  // ---- Cluster view ----
  await page.locator('#connection[data-state="live"]').waitFor();
  await page.locator('#hosts-table tbody tr[data-key="h2"]').waitFor();
  expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('ferry');
  expect(await page.getByRole('navigation', { name: 'Views' }).getByRole('link').allInnerTexts()).toEqual(['Cluster', 'Workloads', 'Migrations']);
  const h1Row = page.locator('#hosts-table tbody tr[data-key="h1"]');
  expect(await h1Row.locator('th').innerText()).toMatch(/^h1\s+198\.18\./);
  const h1Cells = await h1Row.locator('td').allInnerTexts();
  expect(h1Cells[0]).toBe('alive');
  expect(h1Cells[1]).toMatch(/^4\.\d+(\.\d+)?\s+usable$/);
  expect(h1Cells[2]).toContain('criu check');
  expect(h1Cells[3]).toMatch(/used \/ .* free/);
  expect(h1Cells[4]).toBe('1');
  await page.getByRole('button', { name: 'Cordon h1', exact: true }).waitFor();
  await page.getByRole('button', { name: 'Drain h2', exact: true }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'cluster.png'), fullPage: true });

  // ---- Workloads view: start a migration to h2 ----
  await page.getByRole('link', { name: 'Workloads' }).click();
  // A view link moves focus to the view's heading (keyboard and screen-reader users land there).
  await waitFor('focus on the view heading', async () => (await page.evaluate(() => document.activeElement?.id)) === 'h-workloads');
  const row = page.locator('#workloads-table tbody tr[data-key="dash"]');
  await row.waitFor();
  expect((await row.locator('td').allInnerTexts()).slice(0, 4)).toEqual(['h1', 'running', expect.stringMatching(/^\d+$/), expect.stringMatching(/MiB$/)]);

  // Everything the Migrations view's live table shows while the migration runs.
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as { seenLive: string[] }).seenLive = seen;
    const tbody = document.querySelector('#live-table tbody')!;
    new MutationObserver(() => {
      for (const tr of Array.from(tbody.querySelectorAll('tr'))) seen.push(Array.from(tr.cells).map((c) => c.textContent?.trim() ?? '').join(' | '));
    }).observe(tbody, { subtree: true, childList: true, characterData: true });
  });
  const progressSeen: number[] = [];
  const progressSub = cluster.nc.subscribe(subjects.allProgress(), { callback: (_e, msg) => progressSeen.push((decode(msg.data) as { bytes: number }).bytes) });

  const counterBefore = await w.counter();
  await page.getByRole('button', { name: 'Migrate dash', exact: true }).click();
  const dialog = page.getByRole('dialog', { name: 'Migrate dash from h1' });
  await dialog.waitFor();
  expect(await dialog.getByLabel('Target host').locator('option').allInnerTexts()).toEqual(['Let ferry place it', 'h2']);
  await dialog.getByLabel('Target host').selectOption('h2');
  await page.screenshot({ path: join(SHOTS, 'migrate-dialog.png') });
  await dialog.getByRole('button', { name: 'Migrate', exact: true }).click();
  // Watch it from the Migrations view while it runs.
  await page.getByRole('link', { name: 'Migrations' }).click();
  // The screenshot needs the row still there; what the live table showed is checked below in any case.
  const liveRow = page.locator('#live-table tbody tr').filter({ hasText: 'freeze + dump + transfer' });
  if (await liveRow.first().waitFor({ timeout: 30_000 }).then(() => true, () => false)) {
    await page.screenshot({ path: join(SHOTS, 'migrations-live.png'), fullPage: true });
  }
  await page.getByRole('link', { name: 'Workloads' }).click();
  const result = row.locator('td[data-role="result"]');
  await waitFor('inline result', async () => (await result.innerText()).startsWith('succeeded'), 90_000);
  progressSub.unsubscribe();
  expect(await result.innerText()).toMatch(/^succeeded: dash now on h2, downtime [\d.]+ m?s, [\d.]+ MiB moved$/);
  await waitFor('workload row on h2', async () => (await row.locator('td').first().innerText()) === 'h2');
  await page.screenshot({ path: join(SHOTS, 'workloads.png'), fullPage: true });

  // The workload carried on, once, with its memory intact.
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  expect(await w.starts()).toBe(1);
  const ps = await cluster.ferry(['ps', '--json']);
  const entry = (ps.json as Array<{ name: string; host: string; pid: number }>).find((x) => x.name === 'dash')!;
  expect(entry.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');

  // What the live table showed: the migration's steps and its bytes moving.
  const seenLive = await page.evaluate(() => (window as unknown as { seenLive: string[] }).seenLive);
  const mine = seenLive.filter((l) => l.includes('| dash | h1 → h2 |'));
  expect(mine.some((l) => l.includes('| freeze + dump + transfer |'))).toBe(true);
  expect(mine.some((l) => /\| [\d.]+ MiB( of [\d.]+ MiB)? \|/.test(l))).toBe(true);
  // Two or more progress samples from the target make a rate.
  if (progressSeen.filter((b) => b > 0).length >= 2) expect(mine.some((l) => /\| [1-9][\d.]* [KMG]iB\/s$/.test(l))).toBe(true);

  // ---- Migrations view: the finished migration's timeline and the downtime chart ----
  await page.getByRole('link', { name: 'Migrations' }).click();
  await page.locator('#live-empty').waitFor({ state: 'visible' });
  const mrow = page.locator('#migrations-table tbody tr').filter({ hasText: 'dash' }).first();
  await mrow.waitFor();
  const cells = await mrow.locator('td').allInnerTexts();
  expect(cells.slice(0, 3)).toEqual(['dash', 'h1 → h2', 'succeeded']);
  expect(cells[4]).toMatch(/^[\d.]+ m?s$/);
  expect(cells[5]).toMatch(/MiB$/);
  const tl = await mrow.locator('[data-role="timeline"] svg').getAttribute('aria-label');
  expect(tl).toMatch(/^Timeline: pre-flight [\d.]+ m?s, freeze \+ dump [\d.]+ m?s, (transfer [\d.]+ m?s, )?restore [\d.]+ m?s, release [\d.]+ m?s; total [\d.]+ m?s; downtime [\d.]+ m?s$/);
  expect(await mrow.locator('[data-role="timeline"] rect').count()).toBeGreaterThanOrEqual(5);
  expect(await page.locator('#downtime-chart circle').count()).toBe(1);
  expect(await page.locator('#chart-caption').innerText()).toMatch(/^Downtime of the last 1 migration\(s\)/);
  await page.screenshot({ path: join(SHOTS, 'migrations.png'), fullPage: true });

  // ---- Cordon from the Cluster view ----
  await page.getByRole('link', { name: 'Cluster' }).click();
  // Keyboard: Enter opens the confirmation with Cancel focused; Escape cancels; nothing changes.
  await page.getByRole('button', { name: 'Cordon h2', exact: true }).focus();
  await page.keyboard.press('Enter');
  const confirm = page.getByRole('dialog', { name: 'Cordon h2?' });
  await confirm.waitFor();
  expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Cancel');
  await page.keyboard.press('Escape');
  await confirm.waitFor({ state: 'hidden' });
  expect((await hostsFromCli()).find((h) => h.name === 'h2')!.cordoned).toBe(false);

  await page.getByRole('button', { name: 'Cordon h1', exact: true }).click();
  await page.getByRole('dialog', { name: 'Cordon h1?' }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'cordon-dialog.png') });
  await page.getByRole('dialog', { name: 'Cordon h1?' }).getByRole('button', { name: 'Cordon', exact: true }).click();
  await page.getByRole('button', { name: 'Uncordon h1', exact: true }).waitFor();
  expect(await h1Row.locator('td').first().innerText()).toBe('cordoned');
  expect(await page.locator('#cluster-result').innerText()).toBe('h1 cordoned.');
  expect((await hostsFromCli()).map((h) => [h.name, h.cordoned])).toEqual([['h1', true], ['h2', false]]);
  await page.screenshot({ path: join(SHOTS, 'cluster-cordoned.png'), fullPage: true });

  await page.getByRole('button', { name: 'Uncordon h1', exact: true }).click();
  await page.getByRole('dialog', { name: 'Uncordon h1?' }).getByRole('button', { name: 'Uncordon', exact: true }).click();
  await page.getByRole('button', { name: 'Cordon h1', exact: true }).waitFor();
  expect((await hostsFromCli()).find((h) => h.name === 'h1')!.cordoned).toBe(false);

  // Markup: every button has a name, every column header a scope, every graphic a label.
  const a11y = await page.evaluate(() => ({
    unnamedButtons: Array.from(document.querySelectorAll('button')).filter((b) => !(b.getAttribute('aria-label') || b.textContent?.trim())).length,
    headersWithoutScope: Array.from(document.querySelectorAll('thead th')).filter((th) => th.getAttribute('scope') !== 'col').length,
    unlabelledImages: Array.from(document.querySelectorAll('[role="img"]')).filter((e) => !(e.getAttribute('aria-label') || e.getAttribute('aria-labelledby'))).length,
    landmarks: ['header', 'nav', 'main'].filter((t) => document.querySelector(t)).length,
    liveRegions: document.querySelectorAll('[aria-live]').length,
  }));
  expect(a11y).toEqual({ unnamedButtons: 0, headersWithoutScope: 0, unlabelledImages: 0, landmarks: 3, liveRegions: expect.any(Number) });
  expect(a11y.liveRegions).toBeGreaterThanOrEqual(2);

  // ---- A viewer's token: everything shown, every action disabled ----
  // Signing out leaves a fresh page: nothing the operator saw stays behind the dialog.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await login.waitFor();
  await waitFor('a fresh page', async () => (await page.locator('#hosts-table tbody tr').count()) === 0);
  await login.getByLabel('Access token').fill(cluster.httpTokens.viewer);
  await login.getByRole('button', { name: 'Sign in' }).click();
  await login.waitFor({ state: 'hidden' });
  expect(await page.locator('#whoami').innerText()).toBe('dev-viewer (viewer)');
  await page.locator('#connection[data-state="live"]').waitFor();
  await waitFor('viewer buttons disabled', async () => page.getByRole('button', { name: 'Cordon h1', exact: true }).isDisabled());
  expect(await page.getByRole('button', { name: 'Drain h2', exact: true }).isDisabled()).toBe(true);
  await page.getByRole('link', { name: 'Workloads' }).click();
  expect(await page.getByRole('button', { name: 'Migrate dash', exact: true }).isDisabled()).toBe(true);
  await page.screenshot({ path: join(SHOTS, 'viewer.png'), fullPage: true });
  // The page's requests carried the token in a header, never in a URL.
  expect(requestUrls.filter((u) => u.includes('ferry_'))).toEqual([]);

  expect(offOrigin).toEqual([]);
  expect(pageErrors).toEqual([]);
  expect((await cluster.ferry(['stop', 'dash'])).code).toBe(0);
});

test('the event stream carries lifecycle events as server-sent events; unknown dashboard paths are 404 (401 without a token)', async () => {
  expect((await fetch(`${cluster.httpUrl}/dashboard/nosuch.js`)).status).toBe(401);
  expect((await fetch(`${cluster.httpUrl}/dashboard/nosuch.js`, { headers: { authorization: `Bearer ${cluster.httpTokens.viewer}` } })).status).toBe(404);
  const css = await fetch(`${cluster.httpUrl}/dashboard/app.css`);
  expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');

  // Without a token the stream is refused; with the viewer's it flows.
  expect((await fetch(`${cluster.httpUrl}/v1/events/stream`)).status).toBe(401);
  const ac = new AbortController();
  const res = await fetch(`${cluster.httpUrl}/v1/events/stream`, { signal: ac.signal, headers: { authorization: `Bearer ${cluster.httpTokens.viewer}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
  const reader = res.body!.getReader();
  let text = '';
  const first = await reader.read();
  text += Buffer.from(first.value!).toString('utf8');
  expect(text).toMatch(/^retry: \d+\n/);
  const operator = { authorization: `Bearer ${cluster.httpTokens.operator}` };
  const cordon = await fetch(`${cluster.httpUrl}/v1/hosts/h2/cordon`, { method: 'POST', headers: operator });
  expect(cordon.status).toBe(200);
  const deadline = Date.now() + 15_000;
  let event: unknown;
  while (!event && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString('utf8');
    const m = /event: lifecycle\ndata: (.*)\n\n/.exec(text);
    if (m) event = JSON.parse(m[1]);
  }
  ac.abort();
  expect(event).toMatchObject({ type: 'host', step: 'cordoned', host: 'h2', key: 'h2' });
  expect((await fetch(`${cluster.httpUrl}/v1/hosts/h2/uncordon`, { method: 'POST', headers: operator })).status).toBe(200);
});
