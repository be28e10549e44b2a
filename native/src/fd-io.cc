#include "fd-io.h"

#include <errno.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ferry {

namespace {

bool IsAgain(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

/**
 * poll(2) on one descriptor and the cancel descriptor; `timeout_ms` -1 waits for as long as it
 * takes. A readable cancel descriptor wins over anything else: ECANCELED.
 */
int PollOne(const PumpFd& target, short events, int timeout_ms, short* revents, IoError* error) {
  struct pollfd entries[2] = {{target.fd, events, 0}, {target.cancel_fd, POLLIN, 0}};
  nfds_t count = target.cancel_fd >= 0 ? 2 : 1;
  for (;;) {
    int ready = poll(entries, count, timeout_ms);
    if (ready == -1 && errno == EINTR) continue;
    if (ready == -1) {
      *error = {errno, "poll"};
      return -1;
    }
    if (count == 2 && entries[1].revents != 0) {
      *error = {kCanceledErrno, "sealedPump"};
      return -1;
    }
    if (entries[0].revents & POLLNVAL) {
      *error = {EBADF, "poll"};
      return -1;
    }
    *revents = entries[0].revents;
    return ready;
  }
}

/** POLLHUP/POLLERR without the event asked for: the peer is gone (or the socket shut down). */
bool HungUp(short revents, short wanted) { return (revents & (POLLHUP | POLLERR)) != 0 && (revents & wanted) == 0; }

}  // namespace

bool ProbeFd(int fd, int cancel_fd, PumpFd* out, IoError* error) {
  struct stat st;
  if (fstat(fd, &st) == -1) {
    *error = {errno, "fstat"};
    return false;
  }
  out->fd = fd;
  out->is_socket = S_ISSOCK(st.st_mode);
  out->cancel_fd = cancel_fd;
  return true;
}

bool CancelRequested(int cancel_fd) {
  if (cancel_fd < 0) return false;
  struct pollfd entry = {cancel_fd, POLLIN, 0};
  // EINTR or any other failure: not now; the next check or wait will tell.
  return poll(&entry, 1, 0) == 1;
}

ssize_t ReadSome(const PumpFd& in, uint8_t* buf, size_t len, bool wait, IoError* error) {
  const char* syscall = in.is_socket ? "recv" : "read";
  if (!in.is_socket) {
    // read(2) on a blocking pipe would wait where no cancel can reach it, and the fd's O_NONBLOCK
    // is not ours to set (a child shares the open file description): ask poll first. Sockets get
    // MSG_DONTWAIT instead. (A regular file is always ready: this poll returns at once.)
    short revents = 0;
    int ready = PollOne(in, POLLIN, wait ? -1 : 0, &revents, error);
    if (ready <= 0) return ready == 0 ? kWouldBlock : -1;
  }
  bool hung_up = false;
  for (;;) {
    // MSG_DONTWAIT: a blocking socket behaves like a non-blocking one, so every wait is a poll(2).
    ssize_t n = in.is_socket ? recv(in.fd, buf, len, MSG_DONTWAIT) : read(in.fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (!IsAgain(errno)) {
      *error = {errno, syscall};
      return -1;
    }
    if (!wait) return kWouldBlock;
    // poll said the other end hung up, and there is still nothing to read: that is the end.
    if (hung_up) return 0;
    short revents = 0;
    if (PollOne(in, POLLIN, -1, &revents, error) == -1) return -1;
    hung_up = HungUp(revents, POLLIN);
  }
}

ssize_t ReadFull(const PumpFd& in, uint8_t* buf, size_t len, IoError* error) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ReadSome(in, buf + done, len - done, true, error);
    if (n == -1) return -1;
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int WriteAll(const PumpFd& out, const uint8_t* buf, size_t len, IoError* error) {
  const char* syscall = out.is_socket ? "send" : "write";
  bool hung_up = false;
  while (len > 0) {
    // MSG_NOSIGNAL: a reader that went away gives EPIPE, never SIGPIPE (Node ignores SIGPIPE, but
    // an embedder might not). write(2) to a pipe relies on Node's SIG_IGN for the same; a blocking
    // pipe's write(2) may wait inside the kernel, where a cancel reaches it only once it returns.
    ssize_t n = out.is_socket ? send(out.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) : write(out.fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= static_cast<size_t>(n);
      hung_up = false;
      continue;
    }
    if (n == -1 && errno == EINTR) continue;
    if (n == -1 && !IsAgain(errno)) {
      *error = {errno, syscall};
      return -1;
    }
    if (hung_up) {
      *error = {EPIPE, syscall};
      return -1;
    }
    short revents = 0;
    if (PollOne(out, POLLOUT, -1, &revents, error) == -1) return -1;
    hung_up = HungUp(revents, POLLOUT);
  }
  return 0;
}

ssize_t SendFileAll(const PumpFd& out, int in_fd, uint64_t offset, size_t len, IoError* error) {
  off_t position = static_cast<off_t>(offset);
  size_t done = 0;
  bool hung_up = false;
  while (done < len) {
    ssize_t n = sendfile(out.fd, in_fd, &position, len - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      hung_up = false;
      continue;
    }
    if (n == 0) break;  // the file ended
    if (errno == EINTR) continue;
    if (!IsAgain(errno)) {
      *error = {errno, "sendfile"};
      return -1;
    }
    if (hung_up) {
      *error = {EPIPE, "sendfile"};
      return -1;
    }
    short revents = 0;
    if (PollOne(out, POLLOUT, -1, &revents, error) == -1) return -1;
    hung_up = HungUp(revents, POLLOUT);
  }
  return static_cast<ssize_t>(done);
}

}  // namespace ferry
