/** What both halves of a migration (migration-source.ts, migration-target.ts) are built with. */
import type { NatsConnection } from 'nats';
import type { CriuInfo, Logger } from '@ferry/protocol';
import type { LinuxSyscalls } from '@ferry/native';
import type { AgentMetrics } from '../agent-metrics';
import type { CriuDriver } from '../criu/criu-driver';
import type { StreamerSyscalls } from '../criu/image-streamer';
import type { RepairSyscalls } from '../host/tcp-sockets';
import type { WorkDirs } from '../host/work-dir';
import type { Workloads } from '../workloads/workloads';
import type { FilePumpSyscalls } from './native-file-pump';
import type { PrecopySyscalls } from './memory-precopy';
import type { TunnelSyscalls } from './page-tunnel';

export interface MigrationDeps {
  nc: NatsConnection;
  /** lseek of reopened pinned files, TCP repair, the page tunnel's socket pairs and sealed pumps, the image streamer's pipes, memory pre-copy's reader and filter. */
  syscalls: Pick<LinuxSyscalls, 'lseek' | 'unreadBytes'> & RepairSyscalls & TunnelSyscalls & FilePumpSyscalls & StreamerSyscalls & PrecopySyscalls;
  criu: CriuDriver;
  /** This host's probe, as the coordinator planned the migration from it. */
  criuInfo: CriuInfo;
  workDirs: WorkDirs;
  workloads: Workloads;
  metrics?: AgentMetrics;
  log: Logger;
}
