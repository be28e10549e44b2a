// Reads and writes for the sealed pump's thread on descriptors that may be blocking (a socketpair()
// end, a pipe) or non-blocking (every socket Node created). EAGAIN waits in poll(2), EINTR retries,
// and every wait also watches a cancel descriptor. Nothing here allocates or decides; a failure
// comes back as the errno and the call that set it.
#pragma once

#include <errno.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace ferry {

/**
 * A descriptor the pump uses, whether it is a socket (sockets take recv/send flags), and the
 * descriptor whose readability means "stop" (-1: none), watched by every wait.
 */
struct PumpFd {
  int fd = -1;
  bool is_socket = false;
  int cancel_fd = -1;
};

/** The errno of a failed call and the call's name ("recv", "poll", ...). */
struct IoError {
  int err = 0;
  const char* syscall = nullptr;
};

/** ReadSome's result when `wait` is false and nothing can be read without blocking. */
constexpr ssize_t kWouldBlock = -2;

/** fstat(2)s `fd` to learn whether it is a socket; false with `error` set if fstat fails. */
bool ProbeFd(int fd, int cancel_fd, PumpFd* out, IoError* error);

/** true if `cancel_fd` (>= 0) is readable now: the caller asked the pump to stop. */
bool CancelRequested(int cancel_fd);

/** The error a wait reports when its cancel_fd became readable. */
constexpr int kCanceledErrno = ECANCELED;

/**
 * One read of up to `len` bytes: > 0 bytes read, 0 at end of stream, -1 on failure (`error` set).
 * With `wait` false it never blocks and returns kWouldBlock when nothing is ready.
 */
ssize_t ReadSome(const PumpFd& in, uint8_t* buf, size_t len, bool wait, IoError* error);

/** Reads until `len` bytes or end of stream; returns the count read (< len: the stream ended), or -1. */
ssize_t ReadFull(const PumpFd& in, uint8_t* buf, size_t len, IoError* error);

/** Writes all `len` bytes; 0, or -1 with `error` set (EPIPE when the reader is gone). */
int WriteAll(const PumpFd& out, const uint8_t* buf, size_t len, IoError* error);

/**
 * sendfile(2)s `len` bytes of `in_fd` from `offset` to `out` (waiting for room as WriteAll does),
 * without a copy through user memory. Returns the count sent: < len when the file ended first,
 * or -1 with `error` set.
 */
ssize_t SendFileAll(const PumpFd& out, int in_fd, uint64_t offset, size_t len, IoError* error);

}  // namespace ferry
