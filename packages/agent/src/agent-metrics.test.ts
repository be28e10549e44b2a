import type { AddressInfo } from 'node:net';
import { AgentMetrics, serveAgentMetrics } from './agent-metrics';

test('records CRIU times, transfer bytes, errors and workloads, and serves them', async () => {
  const m = new AgentMetrics('h7');
  m.dumped(250);
  m.restored(1500);
  m.sent(100 * 1024 * 1024, 1000);
  m.received(42);
  m.failed('ferry.v1.agent.h7.restore', 'RESTORE_FAILED');
  m.inventory([
    { name: 'a', host: 'h7', state: 'running', pid: 1, rssBytes: 1, argv: ['x'], startedAt: '', mounts: [], localDirs: [] },
    { name: 'b', host: 'h7', state: 'frozen', pid: 2, rssBytes: 1, argv: ['x'], startedAt: '', mounts: [], localDirs: [] },
  ]);
  const server = await serveAgentMetrics(m, '127.0.0.1', 0);
  try {
    const { port } = server.address() as AddressInfo;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toContain('ferry_agent_criu_dump_duration_seconds_count{host="h7"} 1');
    expect(text).toContain('ferry_agent_criu_restore_duration_seconds_sum{host="h7"} 1.5');
    expect(text).toContain(`ferry_agent_transfer_bytes_total{direction="sent",host="h7"} ${100 * 1024 * 1024}`);
    expect(text).toContain('ferry_agent_transfer_bytes_total{direction="received",host="h7"} 42');
    expect(text).toContain(`ferry_agent_transfer_throughput_bytes_per_second{host="h7"} ${100 * 1024 * 1024}`);
    expect(text).toContain('ferry_agent_errors_total{verb="restore",code="RESTORE_FAILED",host="h7"} 1');
    expect(text).toContain('ferry_agent_workloads{state="frozen",host="h7"} 1');
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
  } finally {
    await new Promise((r) => server.close(r));
  }
});
