// The sealed pump's mechanics, free of N-API: bytes from one descriptor to another through
// AES-256-GCM frames, on the calling thread, until the stream ends or something fails.
//
// Wire format, one frame after another:
//   [4-byte big-endian plaintext length L][L bytes of ciphertext][16-byte GCM tag]
// L = 0 is the end frame (its tag covers the header, so a cut stream is told from an ended one).
// Nonce (12 bytes) = 4-byte caller-chosen prefix || 64-bit big-endian frame counter from 0.
// AAD (12 bytes) = the 4-byte length header || the same 8-byte counter.
#pragma once

#include <cstdint>
#include <string>

namespace ferry {

constexpr size_t kSealedKeyBytes = 32;
constexpr size_t kSealedNoncePrefixBytes = 4;
/** Bounds on frameBytes; TypeScript holds the same ones, these keep the allocation sane without it. */
constexpr uint32_t kSealedMinFrameBytes = 4096;
constexpr uint32_t kSealedMaxFrameBytes = 16u << 20;

struct PumpConfig {
  int in_fd = -1;
  int out_fd = -1;
  /** true: plaintext in, frames out; false: frames in, plaintext out. */
  bool seal = true;
  /** Wiped (OPENSSL_cleanse) as soon as the cipher context holds its key schedule, and on destruction. */
  uint8_t key[kSealedKeyBytes] = {};
  uint8_t nonce_prefix[kSealedNoncePrefixBytes] = {};
  uint32_t frame_bytes = 0;
  /** shutdown(out_fd, SHUT_WR) after the end frame (seal) or after verifying it (open). */
  bool shutdown_out = true;
  /**
   * -1, or a descriptor that becomes readable when the pump must stop (the read end of a
   * socketpair whose other end the caller shuts down). Watched in every wait and between frames.
   */
  int cancel_fd = -1;
  /**
   * open only: most plaintext bytes the stream may deliver; a frame that would go beyond it fails
   * the pump (EFBIG) before any of its bytes is written. 0: no bound. A receiver that knows how
   * much it was promised (a file's declared size) stops a lying sender from filling its disk.
   */
  uint64_t max_out_bytes = 0;

  PumpConfig() = default;
  PumpConfig(const PumpConfig&) = delete;
  PumpConfig& operator=(const PumpConfig&) = delete;
  ~PumpConfig();
  void WipeKey();
};

/** Counts so far and, when `err` is not 0, why the pump stopped: errno, the call, and context. */
struct PumpOutcome {
  /** seal: plaintext bytes read; open: frame bytes read (headers and tags included). */
  uint64_t bytes_in = 0;
  /** seal: frame bytes written (headers, tags and end frame included); open: plaintext bytes written. */
  uint64_t bytes_out = 0;
  /** Frames written (seal) or verified (open), the end frame included. */
  uint64_t frames = 0;
  int err = 0;
  const char* syscall = nullptr;
  std::string detail;
};

/**
 * Runs the pump to the end of the stream. Blocks (in poll(2)) for as long as the descriptors do;
 * a readable cancel_fd ends it with ECANCELED, wherever it is (no end frame is written after that).
 * No descriptor is closed.
 */
PumpOutcome RunSealedPump(PumpConfig& config);

}  // namespace ferry
