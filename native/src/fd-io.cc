#include "fd-io.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ferry {

namespace {

bool IsAgain(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

/**
 * poll(2) on one descriptor; `timeout_ms` -1 waits for as long as it takes. A descriptor shut down
 * with shutdown(2) (how JavaScript stops a pump) reports POLLHUP/POLLIN, so the wait ends.
 */
int PollOne(int fd, short events, int timeout_ms, short* revents, IoError* error) {
  struct pollfd entry = {fd, events, 0};
  for (;;) {
    int ready = poll(&entry, 1, timeout_ms);
    if (ready == -1 && errno == EINTR) continue;
    if (ready == -1) {
      *error = {errno, "poll"};
      return -1;
    }
    if (entry.revents & POLLNVAL) {
      *error = {EBADF, "poll"};
      return -1;
    }
    *revents = entry.revents;
    return ready;
  }
}

/** POLLHUP/POLLERR without the event asked for: the peer is gone (or the socket shut down). */
bool HungUp(short revents, short wanted) { return (revents & (POLLHUP | POLLERR)) != 0 && (revents & wanted) == 0; }

}  // namespace

bool ProbeFd(int fd, PumpFd* out, IoError* error) {
  struct stat st;
  if (fstat(fd, &st) == -1) {
    *error = {errno, "fstat"};
    return false;
  }
  out->fd = fd;
  out->is_socket = S_ISSOCK(st.st_mode);
  return true;
}

ssize_t ReadSome(const PumpFd& in, uint8_t* buf, size_t len, bool wait, IoError* error) {
  const char* syscall = in.is_socket ? "recv" : "read";
  if (!wait && !in.is_socket) {
    // read(2) on a blocking pipe would wait, and the fd's O_NONBLOCK is not ours to set (a child
    // shares the open file description): ask poll first. Sockets get MSG_DONTWAIT instead.
    short revents = 0;
    int ready = PollOne(in.fd, POLLIN, 0, &revents, error);
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
    if (PollOne(in.fd, POLLIN, -1, &revents, error) == -1) return -1;
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
    // an embedder might not). write(2) to a pipe relies on Node's SIG_IGN for the same.
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
    if (PollOne(out.fd, POLLOUT, -1, &revents, error) == -1) return -1;
    hung_up = HungUp(revents, POLLOUT);
  }
  return 0;
}

}  // namespace ferry
