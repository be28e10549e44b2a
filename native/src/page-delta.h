// The page delta: CRIU's pages image (pages-N.img, 4 KiB pages back to back) rewritten so that a
// page the pre-copy already sent becomes a reference to it. The filter reads the image from one
// descriptor and writes the delta to another, on the calling thread; which pages were pre-copied,
// and when, is decided in TypeScript.
//
// Delta stream format (all integers little-endian), parsed by a TypeScript decoder:
//   8-byte magic "FRYDELT1"
//   records, each a 16-byte head of four u32 (op, a, b, c), some followed by bytes:
//     op 1 LITERAL  a = n pages (1..256), b = c = 0; then n * 4096 bytes of page content
//     op 2 REF      a = pre-copy file index, b = first page in that file, c = n pages (>= 1):
//                   the next n pages are pages b .. b+n-1 of that file
//     op 3 TAIL     a = byte count (1..4095), b = c = 0; then those bytes (the input ended in
//                   the middle of a page); only ever right before END
//     op 4 END      a = low 32 bits, b = high 32 bits of the decoded file's total bytes (= the
//                   input's), c = 0. Always the last record: a stream without it was cut, and
//                   the decoder must refuse it.
// A reference run that continues the previous one (same file, next page) is merged into it, so
// an unchanged stretch of memory is one REF; the target leaves a page where the pre-copy put it
// (CRIU reads it from a parent image) when its reference names the page pre-copied from the same
// address, which a run that keeps going mostly does. Content may sit at many locations (zero
// pages), so which one a page refers to is chosen to keep runs going. With `expect` the location
// right after the previous reference, and L the literal pages since it:
//   1. expect moved on by L (the literals replaced pages of the run), if it holds the content;
//   2. expect itself, if it holds the content;
//   3. in expect's file, the first page at or after expect that holds it (before any reference:
//      in any file, the smallest page at or after the input position, lowest file on a tie);
//   4. the first location holding it (by file, then page); none: the page is literal.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "page-index.h"

namespace ferry {

constexpr char kPageDeltaMagic[8] = {'F', 'R', 'Y', 'D', 'E', 'L', 'T', '1'};
constexpr size_t kPageDeltaHeadBytes = 16;
constexpr uint32_t kPageDeltaLiteral = 1;
constexpr uint32_t kPageDeltaRef = 2;
constexpr uint32_t kPageDeltaTail = 3;
constexpr uint32_t kPageDeltaEnd = 4;
/** Most pages in one LITERAL record: the filter's output buffer is one record (1 MiB + head). */
constexpr uint32_t kPageDeltaMaxLiteralPages = 256;

struct DedupConfig {
  /** Shared with the JavaScript object that owns it, which the GC may collect while this runs. */
  std::shared_ptr<const PageIndex> index;
  int in_fd = -1;
  int out_fd = -1;
  /** -1, or a descriptor whose readability means "stop" (as the sealed pump's). */
  int cancel_fd = -1;
};

struct DedupOutcome {
  uint64_t bytes_in = 0;
  /** Delta bytes written: magic, heads, literal pages, tail. */
  uint64_t bytes_out = 0;
  uint64_t literal_pages = 0;
  uint64_t ref_pages = 0;
  int err = 0;
  const char* syscall = nullptr;
  std::string detail;
};

/**
 * Filters in_fd to its end into out_fd. Writes END only after the whole input was read: on a
 * failure or a stop (ECANCELED) the output is left cut. No descriptor is closed.
 */
DedupOutcome RunDedupPages(const DedupConfig& config);

}  // namespace ferry
