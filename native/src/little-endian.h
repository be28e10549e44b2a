// Little-endian integers in byte buffers, whatever the host's order: the page hashes, the page
// delta's record heads, precopyRead's and lazyServe's run tables, CRIU's page-server headers.
#pragma once

#include <cstdint>

namespace ferry {

inline uint32_t LoadLe32(const uint8_t* in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

inline uint64_t LoadLe64(const uint8_t* in) { return uint64_t{LoadLe32(in)} | uint64_t{LoadLe32(in + 4)} << 32; }

inline void StoreLe32(uint8_t* out, uint32_t value) {
  for (int i = 0; i < 4; ++i, value >>= 8) out[i] = static_cast<uint8_t>(value);
}

inline void StoreLe64(uint8_t* out, uint64_t value) {
  for (int i = 0; i < 8; ++i, value >>= 8) out[i] = static_cast<uint8_t>(value);
}

}  // namespace ferry
