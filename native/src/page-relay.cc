#include "page-relay.h"

#include <errno.h>
#include <poll.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <utility>

#include "fd-io.h"
#include "little-endian.h"
#include "page-hash.h"

namespace ferry {

namespace {

constexpr size_t kIovBytes = 32;
/** The bounce buffer a forwarded answer crosses in (the daemon's runs are at most 4 MiB). */
constexpr size_t kForwardPieceBytes = size_t{1} << 20;

struct Iov {
  uint32_t cmd = 0;
  uint64_t pages = 0;
  uint64_t vaddr = 0;
  uint64_t task = 0;
};

Iov DecodeIov(const uint8_t* in) { return {LoadLe32(in), LoadLe64(in + 8), LoadLe64(in + 16), LoadLe64(in + 24)}; }

void EncodeIov(const Iov& iov, uint8_t* out) {
  std::fill(out, out + kIovBytes, 0);
  StoreLe32(out, iov.cmd);
  StoreLe64(out + 8, iov.pages);
  StoreLe64(out + 16, iov.vaddr);
  StoreLe64(out + 24, iov.task);
}

/** Pages fetched ahead, waiting for the daemon. */
struct Segment {
  uint64_t pages = 0;
  /** Of its pages, those not yet sent to the daemon: it is dropped at 0. */
  uint64_t remaining = 0;
  std::unique_ptr<uint8_t[]> data;
};

/**
 * Buffers of a fetch's size, handed back when their pages are taken: fresh memory costs a page
 * fault and a zeroed page per 4 KiB (and, in a VM whose host reclaims freed memory, the host's
 * fault too), which a pull of a GiB through new buffers paid a quarter of a million times.
 */
class BufferPool {
 public:
  explicit BufferPool(size_t bytes) : bytes_(bytes) {}
  std::unique_ptr<uint8_t[]> Take() {
    if (free_.empty()) return std::unique_ptr<uint8_t[]>(new uint8_t[bytes_]);
    std::unique_ptr<uint8_t[]> buffer = std::move(free_.back());
    free_.pop_back();
    return buffer;
  }
  void Give(std::unique_ptr<uint8_t[]> buffer) { free_.push_back(std::move(buffer)); }

 private:
  size_t bytes_;
  std::vector<std::unique_ptr<uint8_t[]>> free_;
};

/** A request to the source not yet answered, in the order sent (the source answers in order). */
struct Fetch {
  /** A daemon's request passed on (its answer goes to the daemon as it comes), else a fetch ahead. */
  bool forward = false;
  uint64_t task = 0;
  uint64_t vaddr = 0;
  uint64_t pages = 0;

  bool Covers(uint64_t t, uint64_t v) const { return t == task && v >= vaddr && (v - vaddr) / kPageBytes < pages; }
};

using Key = std::pair<uint64_t, uint64_t>;

class Relay {
 public:
  explicit Relay(const PageRelayConfig& config) : config_(config), protocol_(config.protocol), pool_(static_cast<size_t>(config.chunk_pages * kPageBytes)) {}

  PageRelayOutcome Run() {
    IoError error;
    if (!ProbeFd(config_.daemon_fd, config_.cancel_fd, &daemon_, &error)) return Failed(error.err, error.syscall, "daemonFd");
    if (!ProbeFd(config_.upstream_fd, config_.cancel_fd, &upstream_, &error)) return Failed(error.err, error.syscall, "upstreamFd");
    first_page_.reserve(config_.runs.size());
    uint64_t total = 0;
    for (const PageRelayRun& run : config_.runs) {
      first_page_.push_back(total);
      total += run.pages;
    }
    claimed_.assign(total, false);
    delivered_.assign(total, false);
    started_ = !config_.wait_for_background;
    bounce_.reset(new uint8_t[kForwardPieceBytes]);
    while (!finished_ && outcome_.err == 0) Step();
    for (const auto& entry : cache_) outcome_.unused_pages += entry.second.remaining;
    return outcome_;
  }

 private:
  PageRelayOutcome Failed(int err, const char* syscall, std::string detail) {
    Fail(err, syscall, std::move(detail));
    return outcome_;
  }

  void Fail(int err, const char* syscall, std::string detail) {
    if (outcome_.err != 0) return;
    outcome_.err = err;
    outcome_.syscall = syscall;
    outcome_.detail = std::move(detail);
  }

  void Step() {
    if (started_ && !closing_) IssueFetches();
    if (outcome_.err != 0) return;
    pollfd fds[3] = {{daemon_.fd, POLLIN, 0}, {upstream_.fd, POLLIN, 0}, {config_.cancel_fd, POLLIN, 0}};
    int n = poll(fds, config_.cancel_fd >= 0 ? 3 : 2, -1);
    if (n < 0) {
      if (errno != EINTR) Fail(errno, "poll", "waiting for the daemon or the source");
      return;
    }
    if (config_.cancel_fd >= 0 && fds[2].revents != 0) return Fail(kCanceledErrno, "pageRelay", "stopped");
    if (fds[1].revents != 0) TakeAnswer();
    if (outcome_.err == 0 && fds[0].revents != 0) ReadRequests();
  }

  // The plan's books: a page of the plan has an index; claimed = asked of the source (or sent).

  /** The plan's run holding page `vaddr` of `task`, or -1. */
  int64_t RunAt(uint64_t task, uint64_t vaddr) const {
    const std::vector<PageRelayRun>& runs = config_.runs;
    auto after = std::upper_bound(runs.begin(), runs.end(), Key(task, vaddr), [](const Key& key, const PageRelayRun& run) {
      return key.first < run.task || (key.first == run.task && key.second < run.vaddr);
    });
    if (after == runs.begin()) return -1;
    size_t r = static_cast<size_t>(after - runs.begin()) - 1;
    const PageRelayRun& run = runs[r];
    if (run.task != task || (vaddr - run.vaddr) / kPageBytes >= run.pages) return -1;
    return static_cast<int64_t>(r);
  }

  /** The index of page `vaddr` of `task` in the plan, or -1 (not a page the plan knows). */
  int64_t PageIndex(uint64_t task, uint64_t vaddr) const {
    int64_t r = RunAt(task, vaddr);
    if (r < 0) return -1;
    return static_cast<int64_t>(first_page_[r] + (vaddr - config_.runs[r].vaddr) / kPageBytes);
  }

  void SetClaimed(uint64_t task, uint64_t vaddr, uint64_t pages, bool claimed) {
    for (uint64_t p = 0; p < pages; ++p) {
      int64_t index = PageIndex(task, vaddr + p * kPageBytes);
      if (index >= 0 && !delivered_[index]) claimed_[index] = claimed;
    }
  }

  /** Pages sent to the daemon: the segments holding them shrink, and go once every page is taken. */
  void MarkDelivered(uint64_t task, uint64_t vaddr, uint64_t pages) {
    for (uint64_t p = 0; p < pages; ++p) {
      uint64_t page = vaddr + p * kPageBytes;
      int64_t index = PageIndex(task, page);
      if (index < 0 || delivered_[index]) continue;
      delivered_[index] = true;
      claimed_[index] = true;
      auto segment = SegmentAt(task, page);
      if (segment == cache_.end()) continue;
      if (--segment->second.remaining == 0) {
        cached_bytes_ -= segment->second.pages * kPageBytes;
        pool_.Give(std::move(segment->second.data));
        cache_.erase(segment);
      }
    }
  }

  std::map<Key, Segment>::iterator SegmentAt(uint64_t task, uint64_t vaddr) {
    auto after = cache_.upper_bound(Key(task, vaddr));
    if (after == cache_.begin()) return cache_.end();
    auto at = std::prev(after);
    if (at->first.first != task || (vaddr - at->first.second) / kPageBytes >= at->second.pages) return cache_.end();
    return at;
  }

  const Fetch* InFlightAt(uint64_t task, uint64_t vaddr) const {
    for (const Fetch& fetch : in_flight_) {
      if (fetch.Covers(task, vaddr)) return &fetch;
    }
    return nullptr;
  }

  // Fetching ahead.

  /** Asks the source for the next unclaimed pages of the plan while the window and the cache allow. */
  void IssueFetches() {
    const uint64_t chunk_bytes = config_.chunk_pages * kPageBytes;
    while (ahead_in_flight_ < config_.window && cached_bytes_ + ahead_bytes_ + chunk_bytes <= config_.cache_bytes) {
      Fetch fetch;
      if (!NextAhead(&fetch)) return;
      if (!SendGet(fetch)) return;
      ahead_in_flight_ += 1;
      ahead_bytes_ += fetch.pages * kPageBytes;
    }
  }

  /** The next run of unclaimed pages in the plan's order, at most a chunk, claimed; false at the end. */
  bool NextAhead(Fetch* fetch) {
    const std::vector<PageRelayRun>& runs = config_.runs;
    while (cursor_run_ < runs.size()) {
      const PageRelayRun& run = runs[cursor_run_];
      uint64_t base = first_page_[cursor_run_];
      while (cursor_page_ < run.pages && claimed_[base + cursor_page_]) ++cursor_page_;
      if (cursor_page_ == run.pages) {
        ++cursor_run_;
        cursor_page_ = 0;
        continue;
      }
      uint64_t start = cursor_page_;
      while (cursor_page_ < run.pages && cursor_page_ - start < config_.chunk_pages && !claimed_[base + cursor_page_]) {
        claimed_[base + cursor_page_] = true;
        ++cursor_page_;
      }
      *fetch = {false, run.task, run.vaddr + start * kPageBytes, cursor_page_ - start};
      return true;
    }
    return false;
  }

  bool SendGet(const Fetch& fetch) {
    uint8_t iov[kIovBytes];
    EncodeIov({protocol_.get_cmd, fetch.pages, fetch.vaddr, fetch.task}, iov);
    IoError error;
    if (WriteAll(upstream_, iov, kIovBytes, &error) == -1) {
      Fail(error.err, error.syscall, "asking the source's page server");
      return false;
    }
    in_flight_.push_back(fetch);
    return true;
  }

  // The source's answers, in the order asked.

  void TakeAnswer() {
    uint8_t head[kIovBytes];
    IoError error;
    ssize_t got = ReadFull(upstream_, head, kIovBytes, &error);
    if (got == -1) return Fail(error.err, error.syscall, "reading the source's page server");
    if (got == 0) return Fail(EPIPE, "pageRelay", "the source's page server went away before the daemon had every page");
    if (got < static_cast<ssize_t>(kIovBytes)) return Fail(EPIPE, "pageRelay", "the source's page server went away mid-answer");
    if (in_flight_.empty()) return Fail(EPROTO, "pageRelay", "the source's page server answered a request nobody made");
    Fetch fetch = in_flight_.front();
    in_flight_.pop_front();
    Iov answer = DecodeIov(head);
    if (answer.cmd != protocol_.reply_cmd || answer.task != fetch.task || answer.vaddr != fetch.vaddr || answer.pages == 0 || answer.pages > fetch.pages) {
      return Fail(EPROTO, "pageRelay",
                  "the source's page server answered command " + std::to_string(answer.cmd) + " with " + std::to_string(answer.pages) + " pages of task " + std::to_string(answer.task) +
                      " to a request for " + std::to_string(fetch.pages) + " pages of task " + std::to_string(fetch.task));
    }
    // Pages asked and not sent go back to the plan: asked again, later.
    if (answer.pages < fetch.pages) {
      SetClaimed(fetch.task, fetch.vaddr + answer.pages * kPageBytes, fetch.pages - answer.pages, false);
      if (!fetch.forward) Rewind(fetch.task, fetch.vaddr + answer.pages * kPageBytes);
    }
    if (fetch.forward) {
      PassOn(head, answer);
      if (!queue_.empty()) queue_.pop_front();
      head_forwarded_ = false;
    } else {
      ahead_in_flight_ -= 1;
      ahead_bytes_ -= fetch.pages * kPageBytes;
      Keep(answer);
    }
    if (outcome_.err == 0 && !closing_) AnswerQueued();
  }

  /** Moves the fetch cursor back to `vaddr` of `task` (a short answer left pages behind it). */
  void Rewind(uint64_t task, uint64_t vaddr) {
    int64_t found = RunAt(task, vaddr);
    if (found < 0) return;
    size_t r = static_cast<size_t>(found);
    uint64_t page = (vaddr - config_.runs[r].vaddr) / kPageBytes;
    if (r < cursor_run_ || (r == cursor_run_ && page < cursor_page_)) {
      cursor_run_ = r;
      cursor_page_ = page;
    }
  }

  /** A forwarded request's answer: to the daemon as it comes, through a bounded buffer. */
  void PassOn(const uint8_t* head, const Iov& answer) {
    IoError error;
    if (WriteAll(daemon_, head, kIovBytes, &error) == -1) return Fail(error.err, error.syscall, "answering the daemon");
    uint64_t left = answer.pages * kPageBytes;
    while (left > 0) {
      size_t piece = static_cast<size_t>(std::min<uint64_t>(left, kForwardPieceBytes));
      ssize_t got = ReadFull(upstream_, bounce_.get(), piece, &error);
      if (got == -1) return Fail(error.err, error.syscall, "reading the source's pages");
      if (static_cast<size_t>(got) < piece) return Fail(EPIPE, "pageRelay", "the source's page server went away mid-answer");
      if (WriteAll(daemon_, bounce_.get(), piece, &error) == -1) return Fail(error.err, error.syscall, "answering the daemon");
      left -= piece;
    }
    MarkDelivered(answer.task, answer.vaddr, answer.pages);
    outcome_.requests += 1;
    outcome_.pages += answer.pages;
  }

  /** A fetch ahead's answer: kept until the daemon asks. */
  void Keep(const Iov& answer) {
    Segment segment;
    segment.pages = answer.pages;
    // A fetch ahead is at most chunk_pages (answers never carry more than asked).
    size_t bytes = static_cast<size_t>(answer.pages * kPageBytes);
    segment.data = pool_.Take();
    IoError error;
    ssize_t got = ReadFull(upstream_, segment.data.get(), bytes, &error);
    if (got == -1) return Fail(error.err, error.syscall, "reading the source's pages");
    if (static_cast<size_t>(got) < bytes) return Fail(EPIPE, "pageRelay", "the source's page server went away mid-answer");
    outcome_.prefetched_pages += answer.pages;
    // Closing: the daemon has every page it wants.
    if (closing_) {
      outcome_.unused_pages += answer.pages;
      return;
    }
    for (uint64_t p = 0; p < answer.pages; ++p) {
      int64_t index = PageIndex(answer.task, answer.vaddr + p * kPageBytes);
      if (index >= 0 && !delivered_[index]) segment.remaining += 1;
    }
    if (segment.remaining == 0) {
      outcome_.unused_pages += answer.pages;
      pool_.Give(std::move(segment.data));
      return;
    }
    cached_bytes_ += bytes;
    cache_.emplace(Key(answer.task, answer.vaddr), std::move(segment));
  }

  // The daemon's requests.

  void ReadRequests() {
    IoError error;
    for (;;) {
      ssize_t got = ReadSome(daemon_, request_ + request_have_, kIovBytes - request_have_, false, &error);
      if (got == kWouldBlock) return;
      if (got == -1) return Fail(error.err, error.syscall, "reading the daemon's request");
      if (got == 0) return Fail(EPIPE, "pageRelay", "the lazy-pages daemon went away before it had every page");
      request_have_ += static_cast<size_t>(got);
      if (request_have_ < kIovBytes) continue;
      request_have_ = 0;
      Handle(DecodeIov(request_));
      if (outcome_.err != 0 || finished_) return;
    }
  }

  void Handle(const Iov& request) {
    if (request.cmd == protocol_.close_cmd || request.cmd == protocol_.force_close_cmd) return Close(request);
    if ((request.cmd & protocol_.cmd_mask) != protocol_.get_cmd) {
      return Fail(EPROTO, "pageRelay", "page server command " + std::to_string(request.cmd) + " is not one a lazy-pages daemon sends");
    }
    if (request.vaddr % kPageBytes != 0 || request.pages == 0 || request.pages > kPageRelayMaxRequestPages) {
      return Fail(EPROTO, "pageRelay", "the daemon asked for " + std::to_string(request.pages) + " pages at an address that is not a page's");
    }
    if (queue_.size() >= kPageRelayMaxWaiting) return Fail(EPROTO, "pageRelay", "more than " + std::to_string(kPageRelayMaxWaiting) + " page requests unanswered");
    if (request.pages > 1) started_ = true;
    queue_.push_back(request);
    AnswerQueued();
  }

  /**
   * Answers the daemon's requests in the order it made them (it reads each answer into the buffer
   * of its oldest request, CRIU's page-xfer.c): the oldest from what was fetched, else it waits
   * for the fetch in flight that holds it, else it is passed on (and the rest wait for its answer).
   */
  void AnswerQueued() {
    while (!queue_.empty() && !head_forwarded_ && outcome_.err == 0) {
      const Iov request = queue_.front();
      auto segment = SegmentAt(request.task, request.vaddr);
      if (segment != cache_.end()) {
        uint64_t skip = (request.vaddr - segment->first.second) / kPageBytes;
        uint64_t pages = std::min(request.pages, segment->second.pages - skip);
        uint8_t head[kIovBytes];
        EncodeIov({protocol_.reply_cmd, pages, request.vaddr, request.task}, head);
        IoError error;
        if (WriteAll(daemon_, head, kIovBytes, &error) == -1 ||
            WriteAll(daemon_, segment->second.data.get() + skip * kPageBytes, static_cast<size_t>(pages * kPageBytes), &error) == -1) {
          return Fail(error.err, error.syscall, "answering the daemon");
        }
        outcome_.requests += 1;
        outcome_.hits += 1;
        outcome_.pages += pages;
        MarkDelivered(request.task, request.vaddr, pages);
        queue_.pop_front();
        continue;
      }
      if (InFlightAt(request.task, request.vaddr) != nullptr) return;
      // Passed on, up to the first page already on its way or here (no page crosses twice).
      uint64_t pages = 1;
      while (pages < request.pages) {
        uint64_t page = request.vaddr + pages * kPageBytes;
        if (SegmentAt(request.task, page) != cache_.end() || InFlightAt(request.task, page) != nullptr) break;
        ++pages;
      }
      SetClaimed(request.task, request.vaddr, pages, true);
      if (SendGet({true, request.task, request.vaddr, pages})) head_forwarded_ = true;
      return;
    }
  }

  /**
   * The daemon has every page: what is still in flight is drained (fetches ahead the daemon never
   * took are dropped), then the close goes to the source and its status back to the daemon.
   */
  void Close(const Iov& request) {
    closing_ = true;
    while (!in_flight_.empty() && outcome_.err == 0) TakeAnswer();
    if (outcome_.err != 0) return;
    uint8_t iov[kIovBytes];
    EncodeIov(request, iov);
    uint8_t status[4];
    IoError error;
    if (WriteAll(upstream_, iov, kIovBytes, &error) == -1) return Fail(error.err, error.syscall, "passing the daemon's close on");
    ssize_t got = ReadFull(upstream_, status, sizeof(status), &error);
    if (got == -1) return Fail(error.err, error.syscall, "reading the source's close status");
    if (got < static_cast<ssize_t>(sizeof(status))) return Fail(EPIPE, "pageRelay", "the source's page server went away before it answered the close");
    if (WriteAll(daemon_, status, sizeof(status), &error) == -1) return Fail(error.err, error.syscall, "answering the daemon's close");
    finished_ = true;
  }

  const PageRelayConfig& config_;
  const LazyServeProtocol& protocol_;
  PageRelayOutcome outcome_;
  PumpFd daemon_;
  PumpFd upstream_;
  std::vector<uint64_t> first_page_;
  std::vector<bool> claimed_;
  std::vector<bool> delivered_;
  BufferPool pool_;
  std::map<Key, Segment> cache_;
  uint64_t cached_bytes_ = 0;
  std::deque<Fetch> in_flight_;
  uint64_t ahead_in_flight_ = 0;
  uint64_t ahead_bytes_ = 0;
  /** The daemon's requests not yet answered, oldest first; the oldest's may be with the source. */
  std::deque<Iov> queue_;
  bool head_forwarded_ = false;
  size_t cursor_run_ = 0;
  uint64_t cursor_page_ = 0;
  bool started_ = false;
  bool closing_ = false;
  bool finished_ = false;
  std::unique_ptr<uint8_t[]> bounce_;
  uint8_t request_[kIovBytes] = {};
  size_t request_have_ = 0;
};

}  // namespace

PageRelayOutcome RunPageRelay(const PageRelayConfig& config) { return Relay(config).Run(); }

}  // namespace ferry
