// Unit tests sit beside the code (packages/*/src/**/*.test.ts); integration and end-to-end tests
// under test/. Both import packages by name, mapped to their sources so no build is needed first
// (the native addon is the exception: it must be compiled by `npm run build`).
const moduleNameMapper = {
  '^@ferry/(protocol|transfer|agent|coordinator|dev-cluster|cli)$': '<rootDir>/packages/$1/src/index.ts',
  '^@ferry/native$': '<rootDir>/native/ts/index.ts',
};
const transform = { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json', diagnostics: false }] };
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      roots: ['<rootDir>/packages', '<rootDir>/native/ts'],
      testMatch: ['**/*.test.ts'],
      moduleNameMapper,
      transform,
    },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      roots: ['<rootDir>/test'],
      testMatch: ['**/*.test.ts'],
      moduleNameMapper,
      transform,
    },
  ],
};
