// The pre-copy's page index: every page's hash, per pre-copy file and in file order, plus all of
// them sorted by content for lookups. Built once (buildPageIndex) from the hash arrays precopyRead
// returned; immutable afterwards, so dedup threads share it without locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "page-hash.h"

namespace ferry {

/** At most this many pre-copy files (a REF record's file index is a u32; TypeScript holds the same bounds). */
constexpr size_t kPageIndexMaxFiles = 65535;
/** At most this many pages per file (2^31: 8 TiB, and every page index fits a u32 with room to spare). */
constexpr uint64_t kPageIndexMaxFilePages = uint64_t{1} << 31;

class PageIndex {
 public:
  struct Location {
    uint32_t file = 0;
    uint32_t page = 0;
  };

  /** One pre-copy file's stored hash array: kPageHashBytes per page. */
  struct FileHashes {
    const uint8_t* bytes;
    size_t length;
  };

  /** Copies the hash arrays (the caller's buffers may change afterwards) and sorts the entries. */
  explicit PageIndex(const std::vector<FileHashes>& files);

  size_t files() const { return files_.size(); }
  uint64_t pages() const { return entries_.size(); }
  /** What the index holds in memory (~40 bytes a page), for the GC's external memory accounting. */
  size_t MemoryBytes() const;

  /** Whether pre-copy file `at.file` has, at page `at.page`, content with this hash. */
  bool HasAt(Location at, const PageHash& hash) const {
    return at.file < files_.size() && at.page < files_[at.file].size() && files_[at.file][at.page] == hash;
  }

  /**
   * A location whose page has this hash: with `expect` (the location right after the previous
   * reference), the first one in expect->file at or after expect->page; without it (no reference
   * yet), the one with the smallest page at or after `input_page` in any file (lowest file on a
   * tie). If there is none such, the first location with the hash. false: the hash is unknown.
   * The preferences keep references in "identity" runs, which the target rebuilds in place.
   */
  bool Find(const PageHash& hash, const Location* expect, uint64_t input_page, Location* out) const;

 private:
  struct Entry {
    PageHash hash;
    uint32_t file;
    uint32_t page;
  };

  std::vector<std::vector<PageHash>> files_;
  /** Sorted by (hash, file, page): a hash's entries are contiguous and in file order. */
  std::vector<Entry> entries_;
};

}  // namespace ferry
