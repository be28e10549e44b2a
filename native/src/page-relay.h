// Post-copy's page pull, on the target: sits between `criu lazy-pages --page-server` (the daemon
// filling the restored workload's memory) and the source's page server (CRIU's lazy dump, at the
// far end of the page tunnel), both speaking CRIU's page-server protocol.
//
// Why: CRIU's daemon asks for one run at a time per process (at most 4 MiB, growing from 64 KiB,
// back to 64 KiB at every fault) and copies it into the process before it asks for the next, so
// the tunnel and the source sat idle while it copied, and it sat idle (spinning in epoll) while the
// pages crossed. This asks the source for the runs the daemon will want next, in its order (each
// process's lazy runs by address), a bounded window ahead, and answers the daemon from what came.
// Answers go in the order the daemon asked (it reads each into its oldest request's buffer); a
// request nothing was fetched for is passed on, and a fault waits for at most the window in flight
// ahead of it.
//
// TypeScript decides everything: the runs (from the target's own pagemap images), the window, the
// cache bound, the protocol's numbers. This moves the bytes and keeps the books.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lazy-serve.h"

namespace ferry {

/** Most runs a relay's plan holds (TypeScript's PAGE_RELAY_MAX_RUNS is the same). */
constexpr size_t kPageRelayMaxRuns = size_t{1} << 22;
/** Most pages a plan holds in all (16 GiB): one bit of book-keeping each. */
constexpr uint64_t kPageRelayMaxPages = uint64_t{1} << 22;
/** Most pages one request may ask for (the daemon asks for at most 4 MiB, 1024 pages). */
constexpr uint64_t kPageRelayMaxRequestPages = uint64_t{1} << 16;
/** Most requests of the daemon's unanswered at once (CRIU has one background run and a fault per thread). */
constexpr size_t kPageRelayMaxWaiting = 1024;

/** `pages` pages of task `task` from `vaddr`: lazy memory the source's page server holds. */
struct PageRelayRun {
  uint64_t task = 0;
  uint64_t vaddr = 0;
  uint64_t pages = 0;
};

struct PageRelayConfig {
  /** The daemon's page-server socket (the other end of its --ps-socket). */
  int daemon_fd = -1;
  /** The source's page server (the page tunnel's local end). */
  int upstream_fd = -1;
  int cancel_fd = -1;
  /** Sorted by (task, vaddr), not overlapping: the order fetches go in. */
  std::vector<PageRelayRun> runs;
  LazyServeProtocol protocol;
  /** Pages per fetch. */
  uint64_t chunk_pages = 256;
  /** Most fetches unanswered at once. */
  uint64_t window = 4;
  /** Most bytes fetched and not yet taken by the daemon, counting those in flight. */
  uint64_t cache_bytes = 32ull << 20;
  /**
   * Fetch nothing until the daemon asks for a run of more than one page: its background transfer,
   * which starts only once the restore is over (faults are single pages), so fetching ahead never
   * competes with the restore itself.
   */
  bool wait_for_background = true;
};

struct PageRelayOutcome {
  int err = 0;
  const char* syscall = nullptr;
  std::string detail;
  /** The daemon's requests answered. */
  uint64_t requests = 0;
  /** Of those, answered from what was fetched ahead. */
  uint64_t hits = 0;
  /** Pages sent to the daemon. */
  uint64_t pages = 0;
  /** Pages fetched ahead of the daemon. */
  uint64_t prefetched_pages = 0;
  /** Pages fetched ahead that the daemon never took (its process exited or unmapped them). */
  uint64_t unused_pages = 0;
};

/** Relays one daemon session until it closes it (and the source answered the close), or fails. */
PageRelayOutcome RunPageRelay(const PageRelayConfig& config);

}  // namespace ferry
