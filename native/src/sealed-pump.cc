// AES-256-GCM through OpenSSL's EVP interface. The headers are Node's own (node-gyp puts
// <nodedir>/include/node, which holds openssl/, ahead of the system include path), and the symbols
// resolve at load time against the node binary, which statically links OpenSSL and exports its
// symbols for addons. So no libssl-dev is needed and nothing links -lcrypto: the addon always uses
// the OpenSSL build of the Node that loads it. (A Node built with --shared-openssl links the system
// libcrypto instead; its symbols resolve the same way, and node-gyp then points at its headers.)
#include "sealed-pump.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "fd-io.h"

namespace ferry {

namespace {

constexpr size_t kHeaderBytes = 4;
constexpr size_t kCounterBytes = 8;
constexpr size_t kTagBytes = 16;
constexpr size_t kNonceBytes = kSealedNoncePrefixBytes + kCounterBytes;
constexpr size_t kAadBytes = kHeaderBytes + kCounterBytes;

void PutBigEndian32(uint8_t* out, uint32_t value) {
  for (int i = 3; i >= 0; --i, value >>= 8) out[i] = static_cast<uint8_t>(value);
}

uint32_t GetBigEndian32(const uint8_t* in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | uint32_t{in[3]};
}

void PutBigEndian64(uint8_t* out, uint64_t value) {
  for (int i = 7; i >= 0; --i, value >>= 8) out[i] = static_cast<uint8_t>(value);
}

/**
 * One EVP context for the whole pump: the key schedule is computed once, and each frame only
 * re-initialises the nonce. Frames are laid out in one buffer as header | payload | tag, and
 * encrypted or decrypted in place (GCM allows in == out).
 */
class FrameCipher {
 public:
  FrameCipher(bool seal, const uint8_t* nonce_prefix) : seal_(seal) {
    std::copy(nonce_prefix, nonce_prefix + kSealedNoncePrefixBytes, nonce_);
  }
  ~FrameCipher() {
    // EVP_CIPHER_CTX_free cleanses the key schedule it held.
    EVP_CIPHER_CTX_free(ctx_);
    ERR_clear_error();
  }
  FrameCipher(const FrameCipher&) = delete;
  FrameCipher& operator=(const FrameCipher&) = delete;

  bool Init(const uint8_t* key) {
    ctx_ = EVP_CIPHER_CTX_new();
    if (ctx_ == nullptr) return false;
    return (seal_ ? EVP_EncryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, key, nullptr)
                  : EVP_DecryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, key, nullptr)) == 1;
  }

  /** Writes the header for `len` payload bytes, encrypts them and appends the tag. */
  bool Seal(uint8_t* frame, uint32_t len) {
    PutBigEndian32(frame, len);
    uint8_t aad[kAadBytes];
    NextNonceAndAad(frame, aad);
    uint8_t* payload = frame + kHeaderBytes;
    int out_len = 0;
    bool ok = EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce_) == 1 &&
              EVP_EncryptUpdate(ctx_, nullptr, &out_len, aad, kAadBytes) == 1 &&
              (len == 0 || EVP_EncryptUpdate(ctx_, payload, &out_len, payload, static_cast<int>(len)) == 1) &&
              EVP_EncryptFinal_ex(ctx_, payload + len, &out_len) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, kTagBytes, payload + len) == 1;
    return ok;
  }

  /**
   * Verifies and decrypts the frame whose header says `len`. 1: authentic (payload now plaintext);
   * 0: the tag does not match (the payload is garbage and must not be used); -1: OpenSSL failed.
   */
  int Open(uint8_t* frame, uint32_t len) {
    uint8_t aad[kAadBytes];
    NextNonceAndAad(frame, aad);
    uint8_t* payload = frame + kHeaderBytes;
    int out_len = 0;
    bool ready = EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce_) == 1 &&
                 EVP_DecryptUpdate(ctx_, nullptr, &out_len, aad, kAadBytes) == 1 &&
                 (len == 0 || EVP_DecryptUpdate(ctx_, payload, &out_len, payload, static_cast<int>(len)) == 1) &&
                 EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, kTagBytes, payload + len) == 1;
    if (!ready) return -1;
    if (EVP_DecryptFinal_ex(ctx_, payload + len, &out_len) == 1) return 1;
    ERR_clear_error();
    return 0;
  }

 private:
  /** Puts this frame's counter into the nonce and builds the AAD, then advances the counter. */
  void NextNonceAndAad(const uint8_t* header, uint8_t* aad) {
    PutBigEndian64(nonce_ + kSealedNoncePrefixBytes, counter_);
    std::copy(header, header + kHeaderBytes, aad);
    std::copy(nonce_ + kSealedNoncePrefixBytes, nonce_ + kNonceBytes, aad + kHeaderBytes);
    ++counter_;
  }

  bool seal_;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  uint8_t nonce_[kNonceBytes] = {};
  uint64_t counter_ = 0;
};

/** The pump's frame buffer, wiped when freed: it held plaintext. */
struct FrameBuffer {
  explicit FrameBuffer(size_t size) : data(new (std::nothrow) uint8_t[size]), size(size) {}
  ~FrameBuffer() {
    if (data) OPENSSL_cleanse(data.get(), size);
  }
  std::unique_ptr<uint8_t[]> data;
  size_t size;
};

void Fail(PumpOutcome* outcome, int err, const char* syscall, std::string detail) {
  outcome->err = err;
  outcome->syscall = syscall;
  outcome->detail = std::move(detail);
}

void FailCanceled(PumpOutcome* outcome) {
  Fail(outcome, kCanceledErrno, "sealedPump", "stopped by its caller after " + std::to_string(outcome->frames) + " frames");
}

void FailIo(PumpOutcome* outcome, const IoError& error, const std::string& detail) {
  if (error.err == kCanceledErrno) return FailCanceled(outcome);
  Fail(outcome, error.err, error.syscall, detail);
}

/**
 * Reads up to `cap` bytes: waits for the first bytes, then takes whatever more is ready without
 * waiting. A frame costs 20 bytes and one GCM setup, so it is filled while data keeps coming; but
 * bytes that have arrived are never held back waiting for more. CRIU's page-server protocol waits
 * for replies at points (a flush waits for the server's acknowledgement), so a pump that sat on a
 * half-full frame could stall the dump, or deadlock it. Returns the count (0: end of stream), or -1.
 */
ssize_t Fill(const PumpFd& in, uint8_t* buf, size_t cap, bool* eof, IoError* error) {
  ssize_t first = ReadSome(in, buf, cap, true, error);
  if (first <= 0) {
    *eof = first == 0;
    return first;
  }
  size_t filled = static_cast<size_t>(first);
  while (filled < cap) {
    ssize_t more = ReadSome(in, buf + filled, cap - filled, false, error);
    if (more == kWouldBlock) break;
    if (more == -1) return -1;
    if (more == 0) {
      *eof = true;
      break;
    }
    filled += static_cast<size_t>(more);
  }
  return static_cast<ssize_t>(filled);
}

void RunSeal(const PumpConfig& config, const PumpFd& in, const PumpFd& out, FrameCipher& cipher, uint8_t* frame,
             PumpOutcome* outcome) {
  IoError error;
  bool eof = false;
  while (!eof) {
    // Checked per frame as well as in every wait: an input that is always ready never waits.
    if (CancelRequested(in.cancel_fd)) return FailCanceled(outcome);
    ssize_t n = Fill(in, frame + kHeaderBytes, config.frame_bytes, &eof, &error);
    if (n == -1) return FailIo(outcome, error, "reading plaintext for frame " + std::to_string(outcome->frames));
    if (n == 0) break;
    uint32_t len = static_cast<uint32_t>(n);
    outcome->bytes_in += len;
    if (!cipher.Seal(frame, len)) return Fail(outcome, EIO, "EVP_EncryptUpdate", "AES-256-GCM failed");
    size_t wire = kHeaderBytes + len + kTagBytes;
    if (WriteAll(out, frame, wire, &error) == -1) {
      return FailIo(outcome, error, "writing frame " + std::to_string(outcome->frames));
    }
    outcome->bytes_out += wire;
    ++outcome->frames;
  }
  // The end of input may be the caller's doing (it shut inFd down to stop the pump): a stop asked
  // for must never leave as an authenticated end, which would tell the reader the stream is whole.
  if (CancelRequested(in.cancel_fd)) return FailCanceled(outcome);
  if (!cipher.Seal(frame, 0)) return Fail(outcome, EIO, "EVP_EncryptUpdate", "AES-256-GCM failed");
  if (WriteAll(out, frame, kHeaderBytes + kTagBytes, &error) == -1) {
    return FailIo(outcome, error, "writing the end frame");
  }
  outcome->bytes_out += kHeaderBytes + kTagBytes;
  ++outcome->frames;
}

/**
 * The open side's two halves, on two threads: this one reads and authenticates frames, a writer
 * thread writes their plaintext out. Profiled on a 1 GiB migration, the receiving pump was the
 * bottleneck, busy for the whole transfer, most of it in the write of the plaintext into the
 * target's tmpfs (fresh page cache pages: a copy and an allocation per page), the rest in the
 * socket read and the AES-GCM; one thread did them in turn, so the connection stalled while a
 * frame was written. Two frame buffers go back and forth between the halves: while one frame is
 * written, the next is read and opened.
 */
class OpenPipeline {
 public:
  OpenPipeline(const PumpConfig& config, const PumpFd& out, size_t frame_size)
      : config_(config), out_(out), slots_{FrameBuffer(frame_size), FrameBuffer(frame_size)} {}

  bool Ready() const { return slots_[0].data && slots_[1].data; }

  /** The reading half, on the calling thread; the writer thread runs meanwhile. */
  void Run(const PumpFd& in, FrameCipher& cipher, PumpOutcome* outcome) {
    std::thread writer([this] { WriteLoop(); });
    ReadLoop(in, cipher, outcome);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reader_done_ = true;
    }
    changed_.notify_all();
    writer.join();
    outcome->bytes_out = bytes_written_;
    // The first failure wins: a reader that stopped because the writer failed reports the writer's.
    if (outcome->err == 0 && write_outcome_.err != 0) {
      outcome->err = write_outcome_.err;
      outcome->syscall = write_outcome_.syscall;
      outcome->detail = write_outcome_.detail;
    }
  }

 private:
  struct Pending {
    int slot;
    uint32_t len;
    uint64_t index;
  };

  void ReadLoop(const PumpFd& in, FrameCipher& cipher, PumpOutcome* outcome) {
    IoError error;
    uint64_t declared_out = 0;
    for (int next = 0;; next ^= 1) {
      // Wait until the slot is free (the writer is done with the frame it held) or the writer failed.
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return writer_failed_ || !busy_[next]; });
        if (writer_failed_) return;
      }
      uint8_t* frame = slots_[next].data.get();
      if (CancelRequested(in.cancel_fd)) return FailCanceled(outcome);
      const std::string where = "frame " + std::to_string(outcome->frames);
      // Exactly one frame is read at a time (header, then body): the pump never consumes a byte
      // past the end frame, which belongs to whoever reads the descriptor next.
      ssize_t n = ReadFull(in, frame, kHeaderBytes, &error);
      if (n == -1) return FailIo(outcome, error, "reading the header of " + where);
      if (n < static_cast<ssize_t>(kHeaderBytes)) {
        return Fail(outcome, EPIPE, "sealedPump",
                    "stream cut: input ended " + std::string(n == 0 ? "before " : "inside the header of ") + where +
                        ", without the authenticated end frame");
      }
      uint32_t len = GetBigEndian32(frame);
      // Unauthenticated until its tag is checked: bound it before reading anything it asks for.
      if (len > config_.frame_bytes) {
        return Fail(outcome, EMSGSIZE, "sealedPump",
                    where + " claims " + std::to_string(len) + " bytes, more than frameBytes (" +
                        std::to_string(config_.frame_bytes) + "); refused");
      }
      size_t body = len + kTagBytes;
      n = ReadFull(in, frame + kHeaderBytes, body, &error);
      if (n == -1) return FailIo(outcome, error, "reading " + where);
      if (n < static_cast<ssize_t>(body)) {
        return Fail(outcome, EPIPE, "sealedPump", "stream cut: input ended inside " + where + ", without the authenticated end frame");
      }
      outcome->bytes_in += kHeaderBytes + body;
      int opened = cipher.Open(frame, len);
      if (opened == -1) return Fail(outcome, EIO, "EVP_DecryptUpdate", "AES-256-GCM failed");
      if (opened == 0) {
        return Fail(outcome, EBADMSG, "sealedPump",
                    "authentication failed on " + where + " (wrong key or nonce prefix, or the stream was altered)");
      }
      ++outcome->frames;
      if (len == 0) {
        // The authenticated end: everything before it is queued or written; the writer drains it.
        return;
      }
      if (config_.max_out_bytes != 0 && declared_out + len > config_.max_out_bytes) {
        return Fail(outcome, EFBIG, "sealedPump",
                    where + " would take the stream past its bound of " + std::to_string(config_.max_out_bytes) + " bytes; refused");
      }
      declared_out += len;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        busy_[next] = true;
        queue_[queued_++ % 2] = Pending{next, len, outcome->frames - 1};
      }
      changed_.notify_all();
    }
  }

  void WriteLoop() {
    IoError error;
    for (uint64_t taken = 0;; ++taken) {
      Pending job{};
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return queued_ > taken || reader_done_; });
        if (queued_ <= taken) return;  // The reader is done and everything it queued is written.
        job = queue_[taken % 2];
      }
      if (WriteAll(out_, slots_[job.slot].data.get() + kHeaderBytes, job.len, &error) == -1) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error.err == kCanceledErrno) {
          Fail(&write_outcome_, kCanceledErrno, "sealedPump", "stopped by its caller while writing frame " + std::to_string(job.index));
        } else {
          Fail(&write_outcome_, error.err, error.syscall, "writing the plaintext of frame " + std::to_string(job.index));
        }
        writer_failed_ = true;
        changed_.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        bytes_written_ += job.len;
        busy_[job.slot] = false;
      }
      changed_.notify_all();
    }
  }

  const PumpConfig& config_;
  const PumpFd& out_;
  FrameBuffer slots_[2];
  std::mutex mutex_;
  std::condition_variable changed_;
  bool busy_[2] = {false, false};
  /** Frames handed to the writer, in order (at most two outstanding: one per slot). */
  Pending queue_[2] = {};
  uint64_t queued_ = 0;
  bool reader_done_ = false;
  bool writer_failed_ = false;
  uint64_t bytes_written_ = 0;
  PumpOutcome write_outcome_;
};

}  // namespace

PumpConfig::~PumpConfig() { WipeKey(); }

void PumpConfig::WipeKey() { OPENSSL_cleanse(key, sizeof(key)); }

PumpOutcome RunSealedPump(PumpConfig& config) {
  PumpOutcome outcome;
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
  // Checked before any byte moves: failing only at the end would waste the whole stream.
  if (config.shutdown_out && !out.is_socket) {
    Fail(&outcome, ENOTSOCK, "shutdown", "shutdownOut needs outFd to be a socket");
    return outcome;
  }
  FrameCipher cipher(config.seal, config.nonce_prefix);
  bool keyed = cipher.Init(config.key);
  config.WipeKey();
  if (!keyed) {
    Fail(&outcome, EIO, "EVP_CipherInit_ex", "AES-256-GCM setup failed");
    return outcome;
  }
  const size_t frame_size = kHeaderBytes + size_t{config.frame_bytes} + kTagBytes;
  if (config.seal) {
    FrameBuffer frame(frame_size);
    if (!frame.data) {
      Fail(&outcome, ENOMEM, "sealedPump", "frame buffer");
      return outcome;
    }
    RunSeal(config, in, out, cipher, frame.data.get(), &outcome);
  } else {
    OpenPipeline pipeline(config, out, frame_size);
    if (!pipeline.Ready()) {
      Fail(&outcome, ENOMEM, "sealedPump", "frame buffers");
      return outcome;
    }
    pipeline.Run(in, cipher, &outcome);
  }
  if (outcome.err == 0 && config.shutdown_out && shutdown(out.fd, SHUT_WR) == -1) {
    Fail(&outcome, errno, "shutdown", "outFd after the end frame");
  }
  return outcome;
}

}  // namespace ferry
