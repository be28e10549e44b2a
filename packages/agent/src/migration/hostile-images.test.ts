/**
 * Seeded fuzz of what crosses hosts inside an image or on a page tunnel and is parsed by an agent
 * running as root: the manifest (read and checked by the target), CRIU pagemaps (parsed for
 * post-copy) and page-server requests (decoded by the source's relay). Thousands of random and
 * mutated inputs each: every one is accepted as a well-formed value or refused with a FerryError;
 * nothing else is thrown, nothing hangs, and a refused manifest names no path the target acts on.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError, MANIFEST_FILE } from '@ferry/protocol';
import { decodeIov, PAGE_SERVER_IOV_BYTES } from '../criu/criu-page-protocol';
import { parsePagemap } from '../criu/pagemap-image';
import { pagemapEntry, pagemapHeader, varint } from '../test-fixtures/pagemap-fixtures';
import { checkManifestForTarget, readManifest } from './manifest-file';

// 3,000 manifests are written and read back from disk: seconds on a loaded 2-core machine (a full
// `npm test` run timed out at jest's default 5 s), well under a second alone.
jest.setTimeout(60_000);

const CASES = 3_000;

/** mulberry32: the same cases every run, so a failure can be replayed. */
function seeded(seed: number): { next: () => number; int: (n: number) => number } {
  let state = seed;
  const next = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n) };
}

/** A copy of `good` with a few bytes flipped, cut short, or grown by random bytes. */
function mutate(good: Buffer, r: ReturnType<typeof seeded>): Buffer {
  const out = Buffer.from(good);
  switch (r.int(4)) {
    case 0:
      for (let i = 0, n = 1 + r.int(4); i < n; i++) out[r.int(out.length)] = r.int(256);
      return out;
    case 1:
      return out.subarray(0, r.int(out.length));
    case 2:
      return Buffer.concat([out, Buffer.from(Array.from({ length: 1 + r.int(64) }, () => r.int(256)))]);
    default:
      return Buffer.from(Array.from({ length: r.int(200) }, () => r.int(256)));
  }
}

/** Runs `fn`; anything but success or a FerryError fails the test with the case that caused it. */
function acceptOrRefuse<T>(fn: () => T, input: unknown): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (err instanceof FerryError) return undefined;
    throw new Error(`not a FerryError for ${JSON.stringify(input)?.slice(0, 300)}: ${String(err)}`);
  }
}

test('pagemaps: thousands of mutated images parse into sane entries or are refused as corrupt', () => {
  const r = seeded(0x9a6e);
  const head = Buffer.from([0x08, ...varint(1)]);
  const records = [head, pagemapEntry(0x7f0000000000, 256, 4), pagemapEntry(0x400000, 1, 1), pagemapEntry(0x10000, 3, 6)];
  const good = Buffer.concat([
    pagemapHeader(),
    ...records.map((rec) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(rec.length);
      return Buffer.concat([len, rec]);
    }),
  ]);
  expect(parsePagemap(good).entries).toHaveLength(3);
  let accepted = 0;
  for (let i = 0; i < CASES; i++) {
    const input = mutate(good, r);
    const image = acceptOrRefuse(() => parsePagemap(input), input.toString('hex'));
    if (image === undefined) continue;
    accepted += 1;
    for (const e of image.entries) {
      expect(Number.isSafeInteger(e.vaddr) && e.vaddr >= 0).toBe(true);
      expect(Number.isSafeInteger(e.nrPages) && e.nrPages >= 0).toBe(true);
    }
  }
  // Flipped bytes inside an entry often still parse: both outcomes were exercised.
  expect(accepted).toBeGreaterThan(0);
  expect(accepted).toBeLessThan(CASES);
});

test('page-server requests: thousands of random 32-byte headers decode to safe integers or are refused', () => {
  const r = seeded(0x10f);
  for (let i = 0; i < CASES; i++) {
    const input = Buffer.from(Array.from({ length: PAGE_SERVER_IOV_BYTES }, () => (r.next() < 0.3 ? 0xff : r.int(256))));
    const iov = acceptOrRefuse(() => decodeIov(input), input.toString('hex'));
    if (iov === undefined) continue;
    for (const v of [iov.cmd, iov.nrPages, iov.vaddr, iov.dstId]) expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
  }
});

describe('manifests', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-hostile-manifest-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const expectations = { migrationId: 'm-1', dataDir: '/var/lib/ferry', mountRoots: ['/srv/shared'] };
  const good = {
    name: 'web',
    argv: ['/bin/sleep', '100'],
    env: { A: '1' },
    cwd: '/',
    logPath: '/var/lib/ferry/workloads/web/output.log',
    startedAt: '2026-12-02T00:00:00.000Z',
    logBytes: 7,
    mounts: [],
    pins: [{ key: 'file[1a:2b]', pinPath: '/srv/shared/.ferry-pin-m-1-1', flags: 2, pos: 10 }],
  };
  const hostileStrings = ['/etc/shadow', '../../etc/passwd', '/srv/shared/../../etc/passwd', '', 'x'.repeat(70_000), '\u0000', '/var/lib/ferry/workloads/other/output.log', '/srv/shared/.ferry-pin-m-2-1'];
  const hostileNumbers = [-1, 1.5, 2 ** 60, Number.NaN, 0o100, 0o1000, 0o2000000];

  /** A copy of the good manifest with one field replaced by a hostile or random value. */
  function variant(r: ReturnType<typeof seeded>): unknown {
    const m: Record<string, unknown> = JSON.parse(JSON.stringify(good));
    const pick = <T>(xs: T[]) => xs[r.int(xs.length)];
    const value = () => pick<unknown>([pick(hostileStrings), pick(hostileNumbers), null, [], {}, true, [pick(hostileStrings)]]);
    switch (r.int(6)) {
      case 0:
        m[pick(Object.keys(m))] = value();
        break;
      case 1:
        m.pins = [{ ...good.pins[0], [pick(['key', 'pinPath', 'flags', 'pos'])]: value() }];
        break;
      case 2:
        m.logPath = pick(hostileStrings);
        break;
      case 3:
        m.address = pick(['198.18.0.77/24', '0.0.0.0/0', '127.0.0.1/8', 'not-an-ip', '198.18.0.77']);
        break;
      case 4:
        m.mounts = [{ name: pick(hostileStrings), path: pick(hostileStrings), options: value() }];
        break;
      default:
        return pick<unknown>([null, 42, 'text', [], [good]]);
    }
    return m;
  }

  test('thousands of hostile manifests: read and checked, each accepted only where harmless, else refused with a FerryError', async () => {
    const r = seeded(0xfe44);
    const file = join(dir, MANIFEST_FILE);
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      const m = variant(r);
      // Half as JSON, half as JSON with bytes flipped.
      let text = JSON.stringify(m) ?? 'null';
      if (r.next() < 0.5) text = mutate(Buffer.from(text), r).toString('latin1');
      await writeFile(file, text);
      let read;
      try {
        read = await readManifest(dir, 'web');
      } catch (err) {
        if (!(err instanceof FerryError)) throw new Error(`readManifest threw ${String(err)} for ${text.slice(0, 300)}`);
        refused += 1;
        continue;
      }
      const checked = acceptOrRefuse(() => (checkManifestForTarget(read, expectations), true), read);
      if (checked === undefined) {
        refused += 1;
        continue;
      }
      // What passes both is harmless: the log where the target puts it, pins of this migration on its filesystems, no address.
      expect(read.logPath).toBe(good.logPath);
      expect(read.address).toBeUndefined();
      for (const pin of read.pins) expect(pin.pinPath).toMatch(/^\/srv\/shared\/\.ferry-pin-m-1-[0-9a-f]+$/);
    }
    expect(refused).toBeGreaterThan(CASES / 2);
  });
});
