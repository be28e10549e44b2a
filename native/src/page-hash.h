// The content hash of a 4 KiB memory page, shared by the pre-copy reader (which hashes what it
// copies) and the page delta filter (which hashes what CRIU dumps, to find it among the copies).
// XXH3-128: ~10x memcpy speed, and 128 bits make an accidental collision between two different
// pages (which would restore the wrong bytes) negligible, unlike a 64-bit hash over many
// migrations' worth of pages.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

constexpr size_t kPageBytes = 4096;
/** A hash as stored in the pre-copy's hash arrays: low64 little-endian, then high64 little-endian. */
constexpr size_t kPageHashBytes = 16;

struct PageHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  bool operator==(const PageHash& other) const { return lo == other.lo && hi == other.hi; }
  bool operator!=(const PageHash& other) const { return !(*this == other); }
  bool operator<(const PageHash& other) const { return lo != other.lo ? lo < other.lo : hi < other.hi; }
};

/** XXH3_128bits(page, 4096). */
PageHash HashPage(const uint8_t* page);

/** Hashes `count` consecutive pages into `out` (kPageHashBytes each, in the stored byte order). */
void HashPages(const uint8_t* pages, size_t count, uint8_t* out);

/** The stored 16-byte form of a hash, and back. Explicitly little-endian, whatever the host. */
void StorePageHash(const PageHash& hash, uint8_t* out);
PageHash LoadPageHash(const uint8_t* in);

}  // namespace ferry
