/** Bootstrap of agents onto hosts over SSH (`ferry hosts add|remove`, `ferry dev up --ssh`). */
export { bootstrapAgent, removeBootstrappedAgent, compileBootstrapOptions, defaultBootstrapOptions, DEFAULT_BOOTSTRAP_STATE_DIR, DEFAULT_REGISTER_TIMEOUT_MS } from './bootstrap-agent';
export type { BootstrapOptions, BootstrapInput, BootstrapResult, BootstrapReporter, RemoveOptions } from './bootstrap-agent';
export { loadBootstrapRecord } from './bootstrap-record';
export type { BootstrapRecord } from './bootstrap-record';
export { sshFingerprint, parseKnownHosts, verifyHostKey, verifyAgainstKnownHosts, assertFingerprint } from './host-key';
export type { HostKeyPolicy, HostKeyVerdict } from './host-key';
export { SshSession, parseSshTarget, shellQuote } from './ssh-session';
export type { SshTarget } from './ssh-session';
export { agentBundleEntries, buildAgentBundle, findBundleRoot, AGENT_MAIN_IN_BUNDLE } from './agent-bundle';
export { agentInstallLayout, DEFAULT_INSTALL_PREFIX, DEFAULT_CONFIG_DIR } from './agent-install';
export type { ServiceManager, AgentInstallLayout } from './agent-install';
export { parseRemoteFacts, remoteProblems } from './remote-checks';
export type { RemoteFacts } from './remote-checks';
