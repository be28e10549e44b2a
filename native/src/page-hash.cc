// The only file that includes xxhash.h. XXH_INLINE_ALL compiles XXH3 into this translation unit
// (Debian's libxxhash-dev header; nothing links -lxxhash), so the addon gains no runtime
// dependency. Without -mavx2 the header picks its SSE2 (x86-64) or NEON (arm64) kernel at compile
// time: ~10+ GB/s per core, far above what a pipe carries.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "page-hash.h"

namespace ferry {

namespace {

void Store64(uint64_t value, uint8_t* out) {
  for (int i = 0; i < 8; ++i, value >>= 8) out[i] = static_cast<uint8_t>(value);
}

uint64_t Load64(const uint8_t* in) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | in[i];
  return value;
}

}  // namespace

PageHash HashPage(const uint8_t* page) {
  XXH128_hash_t h = XXH3_128bits(page, kPageBytes);
  return PageHash{h.low64, h.high64};
}

void HashPages(const uint8_t* pages, size_t count, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) StorePageHash(HashPage(pages + i * kPageBytes), out + i * kPageHashBytes);
}

void StorePageHash(const PageHash& hash, uint8_t* out) {
  Store64(hash.lo, out);
  Store64(hash.hi, out + 8);
}

PageHash LoadPageHash(const uint8_t* in) { return PageHash{Load64(in), Load64(in + 8)}; }

}  // namespace ferry
