export { Coordinator } from './coordinator';
export { startCoordinator } from './start-coordinator';
export type { RunningCoordinator } from './start-coordinator';
export { compileCoordinatorOptions, defaultCoordinatorOptions, DEFAULT_HOST_LOST_AFTER_MS } from './coordinator-options';
export type { CoordinatorOptions } from './coordinator-options';
export { HostRegistry } from './host-registry';
export { MigrationStore } from './migration-store';
export type { MigrationRecord } from './migration-store';
export { MigrationRunner } from './migration-runner';
