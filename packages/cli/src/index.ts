/**
 * The CLI as a library: its SSH bootstrap, for tests that check what `ferry hosts add` installed.
 * The local cluster that tests and benchmarks drive is @ferry/dev-cluster.
 */
export * as bootstrap from './bootstrap';
