/**
 * The agent bundle: a tarball of everything `node node_modules/@ferry/agent/dist/main.js` needs,
 * laid out as a node_modules tree. It is made from this checkout's built packages: the workspace
 * packages the agent depends on (package.json + dist, and the native addon's .node file) and the
 * closure of their production dependencies, found the way Node resolves them. Node.js itself is
 * not bundled: the remote must have it (the addon uses N-API, so any Node >= 20.15 loads it).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '@ferry/protocol';

const execFileAsync = promisify(execFile);

/** The program the bundle runs, relative to the install prefix. */
export const AGENT_MAIN_IN_BUNDLE = 'node_modules/@ferry/agent/dist/main.js';
/** The native addon's compiled module, relative to its package directory. */
const NATIVE_ADDON_FILE = 'build/Release/ferry_native.node';

/** One directory or file that goes into the bundle. */
export interface BundleEntry {
  /** Path inside the bundle. */
  target: string;
  /** Where it is now. */
  source: string;
}

interface PackageJson {
  name: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

function readPackageJson(dir: string): PackageJson {
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as PackageJson;
}

/** Node's lookup: node_modules/<name> in `fromDir` and each parent, up to and including `root`. */
function resolvePackageDir(name: string, fromDir: string, root: string): string | null {
  let dir = fromDir;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (dir === root || dir === path.dirname(dir)) return null;
    dir = path.dirname(dir);
  }
}

/**
 * Lists the bundle's contents for a root package (default `@ferry/agent`) of the checkout at
 * `repoRoot`. Workspace packages (symlinks into the repository) contribute package.json, dist/
 * and the native addon; others are copied whole. Throws FAILED_PRECONDITION if something is not built.
 */
export function agentBundleEntries(repoRoot: string, rootPackage = '@ferry/agent'): BundleEntry[] {
  const root = fs.realpathSync(repoRoot);
  const entries = new Map<string, BundleEntry>();
  // Package dirs (as found under node_modules, not resolved) -> their place in the bundle.
  const queue: Array<{ linkDir: string; target: string }> = [];
  const seenReal = new Set<string>();

  const enqueue = (name: string, fromLinkDir: string, fromTarget: string, optional: boolean): void => {
    const found = resolvePackageDir(name, fromLinkDir, root);
    if (found === null) {
      if (optional) return;
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${name} (needed by the agent bundle) is not installed under ${root}; run the set-up`);
    }
    // Where Node found it decides where it sits in the bundle: in the requiring package's own
    // node_modules, below that package's bundle path; in an ancestor's, at the ancestor's path
    // relative to the repository (external packages keep their repository-relative paths).
    const owner = found.slice(0, found.length - path.join('node_modules', name).length - 1);
    const target =
      owner === fromLinkDir ? path.join(fromTarget, 'node_modules', name) : path.join(path.relative(root, owner), 'node_modules', name);
    queue.push({ linkDir: found, target });
  };

  enqueue(rootPackage, root, '', false);
  while (queue.length > 0) {
    const { linkDir, target } = queue.shift() as { linkDir: string; target: string };
    const real = fs.realpathSync(linkDir);
    if (seenReal.has(real)) continue;
    seenReal.add(real);
    const pkg = readPackageJson(real);
    const isWorkspace = !real.split(path.sep).includes('node_modules');
    if (isWorkspace) {
      const dist = path.join(real, 'dist');
      if (!fs.existsSync(dist)) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${pkg.name} is not built (${dist} is missing); run the set-up`);
      entries.set(path.join(target, 'package.json'), { target: path.join(target, 'package.json'), source: path.join(real, 'package.json') });
      entries.set(path.join(target, 'dist'), { target: path.join(target, 'dist'), source: dist });
      const addon = path.join(real, NATIVE_ADDON_FILE);
      if (fs.existsSync(addon)) entries.set(path.join(target, NATIVE_ADDON_FILE), { target: path.join(target, NATIVE_ADDON_FILE), source: addon });
    } else if (!isInsideEntry(entries, target)) {
      entries.set(target, { target, source: real });
    }
    // A workspace package resolves from its real directory (its own node_modules, then the root's).
    const from = isWorkspace ? real : linkDir;
    for (const name of Object.keys(pkg.dependencies ?? {})) enqueue(name, from, target, false);
    // peerDependencies (protocol's nats) are provided by a sibling; optional ones may be absent.
    for (const name of Object.keys(pkg.peerDependencies ?? {})) enqueue(name, from, target, true);
    for (const name of Object.keys(pkg.optionalDependencies ?? {})) enqueue(name, from, target, true);
  }
  return [...entries.values()].sort((a, b) => a.target.localeCompare(b.target));
}

function isInsideEntry(entries: Map<string, BundleEntry>, target: string): boolean {
  for (const existing of entries.keys()) if (target.startsWith(`${existing}${path.sep}`)) return true;
  return false;
}

/**
 * Writes the bundle as a gzipped tarball at `outFile`: a staging tree of symlinks, archived with
 * `tar -h` so links are followed. Returns its entries and size in bytes.
 */
export async function buildAgentBundle(repoRoot: string, outFile: string): Promise<{ entries: BundleEntry[]; bytes: number }> {
  const entries = agentBundleEntries(repoRoot);
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bundle-'));
  try {
    for (const entry of entries) {
      const link = path.join(stage, entry.target);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(entry.source, link);
    }
    fs.writeFileSync(path.join(stage, 'BUNDLE'), `ferry agent bundle\nmain=${AGENT_MAIN_IN_BUNDLE}\ncreated=${new Date().toISOString()}\n`);
    await execFileAsync('tar', ['-czhf', outFile, '-C', stage, '.'], { maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    throw new FerryError(ErrorCode.INTERNAL, `cannot build the agent bundle: ${(err as Error).message}`, { cause: err });
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
  return { entries, bytes: fs.statSync(outFile).size };
}

/** The checkout (or install) whose node_modules holds @ferry/agent, found upwards from `fromDir`. */
export function findBundleRoot(fromDir: string): string {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'node_modules', '@ferry', 'agent', 'package.json'))) return dir;
    if (dir === path.dirname(dir)) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot find node_modules/@ferry/agent above ${fromDir}; run ferry from its checkout`);
    }
  }
}
