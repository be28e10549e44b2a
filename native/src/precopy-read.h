// The pre-copy reader's mechanics, free of N-API: copies runs of a live process's memory into a
// descriptor with process_vm_readv(2), hashing every 4 KiB page on the way, on the calling
// thread. Which runs, and when, is decided in TypeScript (from /proc/PID/maps and the like).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ferry {

/** Most runs one call takes, and most bytes in all (TypeScript holds the same bounds). */
constexpr size_t kPrecopyMaxRuns = size_t{1} << 20;
/** 64 GiB: the hash array for it is 256 MiB, allocated before the first byte moves. */
constexpr uint64_t kPrecopyMaxBytes = uint64_t{64} << 30;

struct PrecopyRun {
  uint64_t address = 0;
  /** A multiple of 4096, > 0 (as the address). */
  uint64_t length = 0;
};

struct PrecopyConfig {
  pid_t pid = 0;
  std::vector<PrecopyRun> runs;
  int out_fd = -1;
  /** -1, or a descriptor whose readability means "stop" (as the sealed pump's). */
  int cancel_fd = -1;
};

struct PrecopyOutcome {
  /** Bytes written to out_fd: the runs' total, once done. */
  uint64_t bytes = 0;
  /** Of those, bytes that could not be read and went out as zeros. */
  uint64_t unreadable_bytes = 0;
  /** kPageHashBytes per page written, in order; `bytes / 4096` of them once done. */
  std::unique_ptr<uint8_t[]> hashes;
  size_t hash_bytes = 0;
  int err = 0;
  const char* syscall = nullptr;
  std::string detail;
};

/**
 * Copies every run, in order, to out_fd. A page that cannot be read (unmapped or remapped since
 * the caller listed it) is written and hashed as zeros, so the hashes always describe the bytes
 * written. A process that is gone fails it (ESRCH), as does a stop (ECANCELED). No descriptor is
 * closed.
 */
PrecopyOutcome RunPrecopyRead(const PrecopyConfig& config);

}  // namespace ferry
