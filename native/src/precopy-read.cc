#include "precopy-read.h"

#include <errno.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "fd-io.h"
#include "page-hash.h"

namespace ferry {

namespace {

/** One process_vm_readv(2) asks for at most this much (256 pages): the buffer written per step. */
constexpr size_t kPieceBytes = size_t{1} << 20;

void Fail(PrecopyOutcome* outcome, int err, const char* syscall, std::string detail) {
  outcome->err = err;
  outcome->syscall = syscall;
  outcome->detail = std::move(detail);
}

std::string Hex(uint64_t value) {
  char text[19];
  snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

/**
 * Reads `length` bytes at `address` of the target into `buf`. The kernel stops a read at the
 * first page it cannot reach (a short count, or EFAULT when that is the first page); that page
 * becomes zeros and the read goes on after it, so one unmapped page costs one page, not the
 * piece. Returns false (with `error`) only when the process is gone or the call itself is refused.
 */
bool ReadPiece(pid_t pid, uint64_t address, uint8_t* buf, size_t length, uint64_t* unreadable, IoError* error) {
  size_t done = 0;
  while (done < length) {
    struct iovec local = {buf + done, length - done};
    struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(address + done)), length - done};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n == -1 && errno == EINTR) continue;
    if (n == -1 && errno != EFAULT) {
      *error = {errno, "process_vm_readv"};
      return false;
    }
    done += n > 0 ? static_cast<size_t>(n) : 0;
    if (done == length) break;
    size_t skip_to = std::min(length, (done / kPageBytes + 1) * kPageBytes);
    std::memset(buf + done, 0, skip_to - done);
    *unreadable += skip_to - done;
    done = skip_to;
  }
  return true;
}

}  // namespace

PrecopyOutcome RunPrecopyRead(const PrecopyConfig& config) {
  PrecopyOutcome outcome;
  PumpFd out;
  IoError error;
  if (!ProbeFd(config.out_fd, config.cancel_fd, &out, &error)) {
    Fail(&outcome, error.err, error.syscall, "outFd");
    return outcome;
  }
  uint64_t total = 0;
  for (const PrecopyRun& run : config.runs) total += run.length;
  outcome.hash_bytes = static_cast<size_t>(total / kPageBytes * kPageHashBytes);
  outcome.hashes.reset(new (std::nothrow) uint8_t[outcome.hash_bytes == 0 ? 1 : outcome.hash_bytes]);
  std::unique_ptr<uint8_t[]> piece(new (std::nothrow) uint8_t[kPieceBytes]);
  if (!outcome.hashes || !piece) {
    Fail(&outcome, ENOMEM, "precopyRead", "hash array for " + std::to_string(total) + " bytes");
    return outcome;
  }
  for (size_t r = 0; r < config.runs.size(); ++r) {
    const PrecopyRun& run = config.runs[r];
    for (uint64_t offset = 0; offset < run.length; offset += kPieceBytes) {
      // Checked per piece as well as in every wait: a pipe with room never waits.
      if (CancelRequested(config.cancel_fd)) {
        Fail(&outcome, kCanceledErrno, "precopyRead", "stopped by its caller after " + std::to_string(outcome.bytes) + " bytes");
        return outcome;
      }
      size_t length = static_cast<size_t>(std::min<uint64_t>(kPieceBytes, run.length - offset));
      uint64_t address = run.address + offset;
      if (!ReadPiece(config.pid, address, piece.get(), length, &outcome.unreadable_bytes, &error)) {
        Fail(&outcome, error.err, error.syscall, "pid " + std::to_string(config.pid) + " at " + Hex(address) + " (run " + std::to_string(r) + ")");
        return outcome;
      }
      HashPages(piece.get(), length / kPageBytes, outcome.hashes.get() + outcome.bytes / kPageBytes * kPageHashBytes);
      if (WriteAll(out, piece.get(), length, &error) == -1) {
        if (error.err == kCanceledErrno) {
          Fail(&outcome, kCanceledErrno, "precopyRead", "stopped by its caller after " + std::to_string(outcome.bytes) + " bytes");
        } else {
          Fail(&outcome, error.err, error.syscall, "writing the copy of " + Hex(address) + " (run " + std::to_string(r) + ")");
        }
        return outcome;
      }
      outcome.bytes += length;
    }
  }
  return outcome;
}

}  // namespace ferry
