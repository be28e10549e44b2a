#include "lazy-serve.h"

#include <errno.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "fd-io.h"
#include "little-endian.h"
#include "page-hash.h"

namespace ferry {

namespace {

constexpr size_t kIovBytes = 32;

std::string Hex(uint64_t value) {
  char text[19];
  snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

void Fail(LazyServeOutcome* outcome, int err, const char* syscall, std::string detail) {
  outcome->err = err;
  outcome->syscall = syscall;
  outcome->detail = std::move(detail);
}

/** The run holding page `vaddr` of `task`, or nullptr. */
const LazyServeRun* Lookup(const std::vector<LazyServeRun>& runs, uint64_t task, uint64_t vaddr) {
  // The last run at or before (task, vaddr).
  auto after = std::upper_bound(runs.begin(), runs.end(), std::make_pair(task, vaddr), [](const std::pair<uint64_t, uint64_t>& key, const LazyServeRun& run) {
    return key.first < run.task || (key.first == run.task && key.second < run.vaddr);
  });
  if (after == runs.begin()) return nullptr;
  const LazyServeRun& run = *(after - 1);
  if (run.task != task || (vaddr - run.vaddr) / kPageBytes >= run.pages) return nullptr;
  return &run;
}

}  // namespace

LazyServeOutcome RunLazyServe(const LazyServeConfig& config) {
  LazyServeOutcome outcome;
  PumpFd sock;
  IoError error;
  if (!ProbeFd(config.sock_fd, config.cancel_fd, &sock, &error)) {
    Fail(&outcome, error.err, error.syscall, "sockFd");
    return outcome;
  }
  const LazyServeProtocol& protocol = config.protocol;
  uint8_t iov[kIovBytes];
  for (;;) {
    ssize_t got = ReadFull(sock, iov, kIovBytes, &error);
    if (got == -1) {
      Fail(&outcome, error.err, error.syscall, "reading the lazy-pages daemon's request");
      return outcome;
    }
    if (got < static_cast<ssize_t>(kIovBytes)) {
      Fail(&outcome, EPIPE, "lazyServe", "the lazy-pages daemon went away before it had every page");
      return outcome;
    }
    uint32_t cmd = LoadLe32(iov);
    uint64_t nr = LoadLe64(iov + 8);
    uint64_t vaddr = LoadLe64(iov + 16);
    uint64_t task = LoadLe64(iov + 24);
    if (cmd == protocol.close_cmd || cmd == protocol.force_close_cmd) {
      uint8_t status[4] = {0, 0, 0, 0};
      if (WriteAll(sock, status, sizeof(status), &error) == -1) Fail(&outcome, error.err, error.syscall, "answering the daemon's close");
      return outcome;
    }
    if ((cmd & protocol.cmd_mask) != protocol.get_cmd) {
      Fail(&outcome, EPROTO, "lazyServe", "page server command " + std::to_string(cmd) + " is not one a lazy-pages daemon sends");
      return outcome;
    }
    const LazyServeRun* run = vaddr % kPageBytes == 0 && nr > 0 ? Lookup(config.runs, task, vaddr) : nullptr;
    if (run == nullptr) {
      Fail(&outcome, ENOENT, "lazyServe", "no lazy page of task " + std::to_string(task) + " at " + Hex(vaddr) + " (" + std::to_string(nr) + " pages asked)");
      return outcome;
    }
    uint64_t skip = (vaddr - run->vaddr) / kPageBytes;
    uint64_t pages = std::min(nr, run->pages - skip);
    uint8_t reply[kIovBytes];
    std::memset(reply, 0, sizeof(reply));
    StoreLe32(reply, protocol.reply_cmd);
    StoreLe64(reply + 8, pages);
    StoreLe64(reply + 16, vaddr);
    StoreLe64(reply + 24, task);
    if (WriteAll(sock, reply, sizeof(reply), &error) == -1) {
      Fail(&outcome, error.err, error.syscall, "answering the daemon");
      return outcome;
    }
    size_t bytes = static_cast<size_t>(pages * kPageBytes);
    ssize_t sent = SendFileAll(sock, config.files[run->file], run->offset + skip * kPageBytes, bytes, &error);
    if (sent == -1) {
      Fail(&outcome, error.err, error.syscall, "sending pages of task " + std::to_string(task) + " at " + Hex(vaddr));
      return outcome;
    }
    if (static_cast<size_t>(sent) != bytes) {
      Fail(&outcome, EIO, "lazyServe", "a lazy page file ended early (file " + std::to_string(run->file) + ", " + std::to_string(sent) + " of " + std::to_string(bytes) + " bytes)");
      return outcome;
    }
    outcome.requests += 1;
    outcome.pages += pages;
  }
}

}  // namespace ferry
