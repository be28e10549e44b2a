#include "page-delta.h"

#include <errno.h>

#include <cstring>
#include <memory>
#include <new>

#include "fd-io.h"
#include "little-endian.h"

namespace ferry {

namespace {

/** The input buffer: a read takes whatever the pipe holds, up to this (256 pages). */
constexpr size_t kInputBytes = size_t{1} << 20;

void PutHead(uint8_t* out, uint32_t op, uint32_t a, uint32_t b, uint32_t c) {
  StoreLe32(out, op);
  StoreLe32(out + 4, a);
  StoreLe32(out + 8, b);
  StoreLe32(out + 12, c);
}

/**
 * Turns the filter's per-page decisions into records: consecutive references to consecutive
 * pages of one file become one REF, consecutive literal pages one LITERAL (up to 256 pages, the
 * buffer's size). At most one record is pending at a time, so records leave in input order.
 */
class DeltaWriter {
 public:
  DeltaWriter(const PumpFd& out, DedupOutcome* outcome)
      : out_(out),
        outcome_(outcome),
        literal_(new (std::nothrow) uint8_t[kPageDeltaHeadBytes + size_t{kPageDeltaMaxLiteralPages} * kPageBytes]) {}

  bool Ready() const { return literal_ != nullptr; }

  bool Start(IoError* error) { return Write(reinterpret_cast<const uint8_t*>(kPageDeltaMagic), sizeof(kPageDeltaMagic), error); }

  bool Ref(PageIndex::Location at, IoError* error) {
    if (literal_count_ > 0 && !FlushLiteral(error)) return false;
    if (ref_count_ > 0 && at.file == ref_file_ && at.page == uint64_t{ref_first_} + ref_count_) {
      ++ref_count_;
      return true;
    }
    if (ref_count_ > 0 && !FlushRef(error)) return false;
    ref_file_ = at.file;
    ref_first_ = at.page;
    ref_count_ = 1;
    return true;
  }

  bool Literal(const uint8_t* page, IoError* error) {
    if (ref_count_ > 0 && !FlushRef(error)) return false;
    std::memcpy(literal_.get() + kPageDeltaHeadBytes + size_t{literal_count_} * kPageBytes, page, kPageBytes);
    ++literal_count_;
    return literal_count_ < kPageDeltaMaxLiteralPages || FlushLiteral(error);
  }

  /** The pending record, then TAIL (if the input ended inside a page) and END. */
  bool Finish(const uint8_t* tail, size_t tail_bytes, uint64_t total_bytes, IoError* error) {
    if (ref_count_ > 0 && !FlushRef(error)) return false;
    if (literal_count_ > 0 && !FlushLiteral(error)) return false;
    uint8_t head[kPageDeltaHeadBytes];
    if (tail_bytes > 0) {
      PutHead(head, kPageDeltaTail, static_cast<uint32_t>(tail_bytes), 0, 0);
      if (!Write(head, sizeof(head), error) || !Write(tail, tail_bytes, error)) return false;
    }
    PutHead(head, kPageDeltaEnd, static_cast<uint32_t>(total_bytes), static_cast<uint32_t>(total_bytes >> 32), 0);
    return Write(head, sizeof(head), error);
  }

 private:
  bool FlushRef(IoError* error) {
    uint8_t head[kPageDeltaHeadBytes];
    PutHead(head, kPageDeltaRef, ref_file_, ref_first_, ref_count_);
    ref_count_ = 0;
    return Write(head, sizeof(head), error);
  }

  bool FlushLiteral(IoError* error) {
    // The head goes in front of the pages already in the buffer: one write per record.
    PutHead(literal_.get(), kPageDeltaLiteral, literal_count_, 0, 0);
    size_t bytes = kPageDeltaHeadBytes + size_t{literal_count_} * kPageBytes;
    literal_count_ = 0;
    return Write(literal_.get(), bytes, error);
  }

  bool Write(const uint8_t* bytes, size_t length, IoError* error) {
    if (WriteAll(out_, bytes, length, error) == -1) return false;
    outcome_->bytes_out += length;
    return true;
  }

  const PumpFd& out_;
  DedupOutcome* outcome_;
  std::unique_ptr<uint8_t[]> literal_;
  uint32_t literal_count_ = 0;
  uint32_t ref_file_ = 0;
  uint32_t ref_first_ = 0;
  uint32_t ref_count_ = 0;
};

void Fail(DedupOutcome* outcome, int err, const char* syscall, std::string detail) {
  outcome->err = err;
  outcome->syscall = syscall;
  outcome->detail = std::move(detail);
}

void FailCanceled(DedupOutcome* outcome) {
  Fail(outcome, kCanceledErrno, "dedupPages",
       "stopped by its caller after " + std::to_string(outcome->bytes_in) + " input bytes; the delta has no END");
}

void FailIo(DedupOutcome* outcome, const IoError& error, const std::string& detail) {
  if (error.err == kCanceledErrno) return FailCanceled(outcome);
  Fail(outcome, error.err, error.syscall, detail);
}

/**
 * Which pre-copied page each input page refers to, if any. Remembers where the last reference
 * left off (`expect_`, the location right after it) and how many literal pages came since.
 */
class RefChooser {
 public:
  explicit RefChooser(const PageIndex& index) : index_(index) {}

  /** `input_page`: how many input pages came before this one. false: the page is new. */
  bool Choose(const PageHash& hash, uint64_t input_page, PageIndex::Location* at) {
    if (!Pick(hash, input_page, at)) {
      ++literals_since_ref_;
      return false;
    }
    // page < 2^31 (kPageIndexMaxFilePages), so page + 1 fits.
    expect_ = PageIndex::Location{at->file, at->page + 1};
    have_expect_ = true;
    literals_since_ref_ = 0;
    return true;
  }

 private:
  bool Pick(const PageHash& hash, uint64_t input_page, PageIndex::Location* at) const {
    if (have_expect_) {
      // Literal pages since the last reference most often replaced the pages they stand for (a
      // page written since the pre-copy): the run goes on past them. This keeps an identity run
      // through content that repeats (zero pages), where the location right after the last
      // reference would match as well, one page off, and break it.
      uint64_t past = uint64_t{expect_.page} + literals_since_ref_;
      if (literals_since_ref_ > 0 && past < kPageIndexMaxFilePages) {
        PageIndex::Location skipped{expect_.file, static_cast<uint32_t>(past)};
        if (index_.HasAt(skipped, hash)) {
          *at = skipped;
          return true;
        }
      }
      // The common case, an unchanged stretch: the page right after the last reference matches.
      if (index_.HasAt(expect_, hash)) {
        *at = expect_;
        return true;
      }
    }
    return index_.Find(hash, have_expect_ ? &expect_ : nullptr, input_page, at);
  }

  const PageIndex& index_;
  bool have_expect_ = false;
  PageIndex::Location expect_;
  uint64_t literals_since_ref_ = 0;
};

void Filter(const DedupConfig& config, const PumpFd& in, DeltaWriter& writer, uint8_t* input, DedupOutcome* outcome) {
  IoError error;
  if (!writer.Start(&error)) return FailIo(outcome, error, "writing the page delta's magic");
  RefChooser chooser(*config.index);
  uint64_t input_page = 0;
  size_t filled = 0;
  for (;;) {
    // Checked per read as well as in every wait: an input that is always ready never waits.
    if (CancelRequested(in.cancel_fd)) return FailCanceled(outcome);
    ssize_t n = ReadSome(in, input + filled, kInputBytes - filled, true, &error);
    if (n == -1) return FailIo(outcome, error, "reading the pages image at byte " + std::to_string(outcome->bytes_in));
    if (n == 0) break;
    filled += static_cast<size_t>(n);
    outcome->bytes_in += static_cast<uint64_t>(n);
    size_t whole = filled / kPageBytes;
    for (size_t i = 0; i < whole; ++i, ++input_page) {
      const uint8_t* page = input + i * kPageBytes;
      PageIndex::Location at;
      bool ok;
      if (chooser.Choose(HashPage(page), input_page, &at)) {
        ok = writer.Ref(at, &error);
        ++outcome->ref_pages;
      } else {
        ok = writer.Literal(page, &error);
        ++outcome->literal_pages;
      }
      if (!ok) return FailIo(outcome, error, "writing the page delta at input page " + std::to_string(input_page));
    }
    // A read may end inside a page: its start waits at the front for the rest.
    filled -= whole * kPageBytes;
    std::memmove(input, input + whole * kPageBytes, filled);
  }
  // The end of input may be the caller's doing (it closed the input to stop the filter): a stop
  // asked for must never leave as an END, which would tell the decoder the file is whole.
  if (CancelRequested(in.cancel_fd)) return FailCanceled(outcome);
  if (!writer.Finish(input, filled, outcome->bytes_in, &error)) return FailIo(outcome, error, "writing the page delta's end");
}

}  // namespace

DedupOutcome RunDedupPages(const DedupConfig& config) {
  DedupOutcome outcome;
  PumpFd in, out;
  IoError error;
  if (!ProbeFd(config.in_fd, config.cancel_fd, &in, &error)) {
    FailIo(&outcome, error, "inFd");
    return outcome;
  }
  if (!ProbeFd(config.out_fd, config.cancel_fd, &out, &error)) {
    FailIo(&outcome, error, "outFd");
    return outcome;
  }
  DeltaWriter writer(out, &outcome);
  std::unique_ptr<uint8_t[]> input(new (std::nothrow) uint8_t[kInputBytes]);
  if (!writer.Ready() || !input) {
    Fail(&outcome, ENOMEM, "dedupPages", "buffers");
    return outcome;
  }
  Filter(config, in, writer, input.get(), &outcome);
  return outcome;
}

}  // namespace ferry
