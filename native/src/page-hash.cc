// The only file that includes xxhash.h. XXH_INLINE_ALL compiles XXH3 into this translation unit
// (Debian's libxxhash-dev header; nothing links -lxxhash), so the addon gains no runtime
// dependency. Without -mavx2 the header picks its SSE2 (x86-64) or NEON (arm64) kernel at compile
// time: ~10+ GB/s per core, far above what a pipe carries.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "page-hash.h"

#include "little-endian.h"

namespace ferry {

PageHash HashPage(const uint8_t* page) {
  XXH128_hash_t h = XXH3_128bits(page, kPageBytes);
  return PageHash{h.low64, h.high64};
}

void HashPages(const uint8_t* pages, size_t count, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) StorePageHash(HashPage(pages + i * kPageBytes), out + i * kPageHashBytes);
}

void StorePageHash(const PageHash& hash, uint8_t* out) {
  StoreLe64(out, hash.lo);
  StoreLe64(out + 8, hash.hi);
}

PageHash LoadPageHash(const uint8_t* in) { return PageHash{LoadLe64(in), LoadLe64(in + 8)}; }

}  // namespace ferry
