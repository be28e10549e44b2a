// Answers `criu lazy-pages --page-server` from this host's files: the pages of a lazy restore whose
// images CRIU's daemon cannot read itself (a pre-copy's parent images, agent migration/page-delta.ts).
// TypeScript decides every page's place (the runs table: which file, at which offset) and the
// protocol's command numbers; this only looks a request up in that table and moves the bytes, with
// sendfile(2) from the file into the daemon's socket, so no page passes through user memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ferry {

/** Most runs one table holds (TypeScript's LAZY_SERVE_MAX_RUNS is the same). */
constexpr size_t kLazyServeMaxRuns = size_t{1} << 22;
/** Most files the runs point into. */
constexpr size_t kLazyServeMaxFiles = 65536;

/** `pages` pages of task `task` from `vaddr` lie in files[file] from byte `offset`. */
struct LazyServeRun {
  uint64_t task = 0;
  uint64_t vaddr = 0;
  uint64_t pages = 0;
  uint64_t file = 0;
  uint64_t offset = 0;
};

/** The daemon's commands and the reply's, as CRIU's page-server protocol numbers them. */
struct LazyServeProtocol {
  /** Bits of a command that name it (the rest are flags). */
  uint32_t cmd_mask = 0;
  /** A request for pages: {cmd, pad, nr_pages, vaddr, dst_id}, 32 bytes little-endian. */
  uint32_t get_cmd = 0;
  /** The reply header's command, before its pages (same layout). */
  uint32_t reply_cmd = 0;
  /** The daemon has every page: answered by a 4-byte status 0, and the session ends. */
  uint32_t close_cmd = 0;
  uint32_t force_close_cmd = 0;
};

struct LazyServeConfig {
  int sock_fd = -1;
  int cancel_fd = -1;
  /** Sorted by (task, vaddr), not overlapping. */
  std::vector<LazyServeRun> runs;
  std::vector<int> files;
  LazyServeProtocol protocol;
};

struct LazyServeOutcome {
  int err = 0;
  const char* syscall = nullptr;
  std::string detail;
  uint64_t requests = 0;
  uint64_t pages = 0;
};

/** Serves one daemon session on config.sock_fd until it closes it (or a failure: `err` set). */
LazyServeOutcome RunLazyServe(const LazyServeConfig& config);

}  // namespace ferry
