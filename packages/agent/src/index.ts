export { Agent } from './agent';
export type { AgentDeps } from './agent';
export { compileAgentOptions, defaultAgentOptions, DEFAULT_HEARTBEAT_INTERVAL_MS } from './agent-options';
export type { AgentOptions } from './agent-options';
export { startAgent } from './start-agent';
export type { RunningAgent } from './start-agent';
export { CriuDriver } from './criu/criu-driver';
export { probeCriu } from './criu/criu-probe';
export { AgentMetrics, serveAgentMetrics, DEFAULT_AGENT_METRICS_PORT } from './agent-metrics';
