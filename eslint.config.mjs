// ferry's lint rules (`npm run lint`, run first by scripts/test.sh). What they keep true, besides
// typescript-eslint's recommended set: packages/<name>/src/index.ts is the only door into a package
// (no deep imports, no relative paths into another package); imports point one way, protocol ->
// (transfer, native) -> (agent, coordinator) -> (dev-cluster, cli), and agent and coordinator never
// import each other; there are no import cycles, across packages too; no file passes 500 lines;
// libraries log through an injected logger, never the console.
//
// typescript-eslint's recommended set is the syntactic one, not `recommendedTypeChecked`. Measured
// here on 2 cores: the type-checked rules on the packages' non-test sources alone took 28 s against
// 12 s for this whole run, and the tests under test/ and beside the code belong to no tsconfig, so
// they could not be type-checked without one. `tsc -b` type-checks every package in the build.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const ROOT = dirname(fileURLToPath(import.meta.url));

/**
 * `@ferry/<name>` -> that package's sources, as jest.config.js maps them. Through node_modules the
 * resolver would land on dist/*.d.ts, where import-x sees no imports: cycles across packages would
 * go unseen, and linting would depend on a build. Read from the folders, so a new package counts.
 */
function workspaceSources() {
  const alias = { '@ferry/native$': [join(ROOT, 'native/ts/index.ts')] };
  for (const name of readdirSync(join(ROOT, 'packages'))) {
    const index = join(ROOT, 'packages', name, 'src/index.ts');
    if (existsSync(index)) alias[`@ferry/${name}$`] = [index];
  }
  return alias;
}

/** Every package's own door: nothing reaches past another package's index. */
const DEEP_IMPORTS = [
  {
    group: ['@ferry/*/**'],
    message: "Import the package by its name ('@ferry/x'): src/index.ts is its only door.",
  },
  {
    // A relative path that goes up and then into a src/, dist/, ts/ or build/ folder has left its own
    // package (inside a package, src/ is never named on the way). import-x/no-relative-packages
    // catches the rest by resolving the path.
    regex: '^(\\.\\./)+(.*/)?(src|dist|ts|build)(/|$)',
    message: "Another package's files: import it by its name ('@ferry/x').",
  },
];

/** no-restricted-imports for one package: the deep-import ban plus the packages it must not use. */
function importsFor(forbidden, why) {
  return {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...DEEP_IMPORTS,
          ...(forbidden.length > 0 ? [{ group: forbidden, message: why }] : []),
        ],
      },
    ],
  };
}

/** `const { v: _v, ...rest } = x` is how a field is left out of a copy: that `_v` is unused on purpose. */
const UNUSED_VARS = { ignoreRestSiblings: true };

const TS_FILES = ['**/*.ts'];
const TEST_FILES = ['**/*.test.ts', 'test/**/*.ts', '**/src/test-*.ts', '**/src/test-fixtures/**/*.ts'];
/** Libraries: they take an injected logger (@ferry/protocol's Logger); their apps use pino. */
const LIBRARY_SOURCES = [
  'native/ts/**/*.ts',
  'packages/protocol/src/**/*.ts',
  'packages/transfer/src/**/*.ts',
  'packages/agent/src/**/*.ts',
  'packages/coordinator/src/**/*.ts',
];

export default defineConfig(
  {
    // A disable comment that no longer silences anything fails the lint, so none outlives its reason.
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  {
    ignores: [
      '**/node_modules/',
      '**/dist/',
      '**/build/',
      'native/build/',
      '.tools/',
      '.turbo/',
      'test-artifacts/',
      'coverage/',
      'bench/out/',
    ],
  },
  js.configs.recommended,
  {
    files: ['**/*.js', '**/*.mjs'],
    rules: { 'no-unused-vars': ['error', UNUSED_VARS] },
  },
  {
    files: TS_FILES,
    extends: [tseslint.configs.recommended],
    rules: { '@typescript-eslint/no-unused-vars': ['error', UNUSED_VARS] },
  },
  {
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.js', '.mjs', '.cjs'],
      'import-x/resolver-next': [
        createTypeScriptImportResolver({
          project: join(ROOT, 'tsconfig.json'),
          alias: workspaceSources(),
        }),
      ],
    },
    rules: {
      'import-x/no-cycle': 'error',
      'import-x/no-self-import': 'error',
      'import-x/no-relative-packages': 'error',
      'max-lines': ['error', { max: 500, skipBlankLines: false, skipComments: false }],
      ...importsFor([], ''),
      // `let server; ... createServer(() => server?.x())` then one assignment after listen(): a const
      // would be in its temporal dead zone if a connection came first, so such lets stay lets.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },

  // ---- which package may import which ----
  {
    files: ['packages/protocol/**'],
    rules: importsFor(['@ferry/*'], 'protocol is the bottom layer: it imports no other ferry package.'),
  },
  {
    files: ['native/**'],
    rules: importsFor(['@ferry/*'], 'native wraps syscalls only: it imports no other ferry package.'),
  },
  {
    files: ['packages/transfer/**'],
    rules: importsFor(['@ferry/*', '!@ferry/protocol'], 'transfer builds on @ferry/protocol alone.'),
  },
  {
    // These tests run the transfer with what the agent injects into it: FilePump and InPlaceAead
    // are interfaces whose real implementations are @ferry/native's sealed pump and aeadInPlace.
    files: ['packages/transfer/src/pumped-direct-path.test.ts', 'packages/transfer/src/live-image-files.test.ts', 'packages/transfer/src/test-native-pump.ts', 'packages/transfer/src/chunk-cipher.test.ts'],
    rules: importsFor(['@ferry/*', '!@ferry/protocol', '!@ferry/native'], 'transfer tests build on @ferry/protocol, and @ferry/native for the real pump and cipher.'),
  },
  {
    files: ['packages/agent/**'],
    rules: importsFor(
      ['@ferry/coordinator', '@ferry/cli', '@ferry/dev-cluster'],
      'The agent shares only @ferry/protocol with the coordinator, and nothing imports the apps above it.',
    ),
  },
  {
    files: ['packages/coordinator/**'],
    rules: importsFor(
      ['@ferry/agent', '@ferry/cli', '@ferry/dev-cluster'],
      'The coordinator shares only @ferry/protocol with the agent, and nothing imports the apps above it.',
    ),
  },

  {
    files: LIBRARY_SOURCES,
    ignores: TEST_FILES,
    rules: { 'no-console': 'error' },
  },

  // ---- tests ----
  {
    files: TEST_FILES,
    rules: {
      // jest tests load plain-JavaScript files (the dashboard's view model) and built artefacts by path.
      '@typescript-eslint/no-require-imports': 'off',
    },
  },

  // ---- plain JavaScript ----
  {
    files: ['packages/coordinator/dashboard/**/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser } },
  },
  {
    // Shared with jest as a CommonJS module (see the file's wrapper).
    files: ['packages/coordinator/dashboard/view-model.js'],
    languageOptions: { globals: { module: 'readonly' } },
  },
  {
    files: ['bench/**/*.js', 'packages/*/bin/**/*.js', 'jest.config.js'],
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: { ...globals.node } },
  },
);
