// Socket calls Node lacks. setsockopt(2) with an int value: what TCP repair needs (TCP_REPAIR off on
// a socket CRIU left in repair mode, taken from the frozen workload with pidfd_getfd). socketpair(2):
// a Unix stream pair whose one end a child (CRIU's page server client) gets through spawn's stdio
// while a sealed pump owns the other. shutdown(2): half-closes a stream (and is how TypeScript
// wakes a pump's cancel descriptor). recvmsg(2) with SCM_RIGHTS: bytes and descriptors from a
// peer on a Unix stream (CRIU's image streaming sends each image's pipe that way). Which option to
// set, what to shut down and when, what the bytes mean is policy, decided in TypeScript.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value SetsockoptInt(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  int32_t level = Int32Arg(info, 1, "level");
  int32_t optname = Int32Arg(info, 2, "optname");
  int value = Int32Arg(info, 3, "value");
  if (setsockopt(fd, level, optname, &value, sizeof(value)) == -1) {
    throw MakeSyscallError(info.Env(), errno, "setsockopt");
  }
  return info.Env().Undefined();
}

Napi::Value Socketpair(const Napi::CallbackInfo& info) {
  int fds[2];
  // Both ends close-on-exec: a child is given one explicitly (spawn's stdio dup2()s it, which clears
  // FD_CLOEXEC on the child's copy only); no other child inherits either end by accident, which
  // would keep the stream open after ferry closes its end.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == -1) {
    throw MakeSyscallError(info.Env(), errno, "socketpair");
  }
  Napi::Array pair = Napi::Array::New(info.Env(), 2);
  pair.Set(uint32_t{0}, Napi::Number::New(info.Env(), fds[0]));
  pair.Set(uint32_t{1}, Napi::Number::New(info.Env(), fds[1]));
  return pair;
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  int32_t how = Int32Arg(info, 1, "how");
  if (shutdown(fd, how) == -1) throw MakeSyscallError(info.Env(), errno, "shutdown");
  return info.Env().Undefined();
}

// Bounds of recvWithFds, as ts/syscalls.ts has them: a read buffer each call allocates, and room for
// that many descriptors in its control message.
constexpr uint32_t kRecvMaxBytes = 1024 * 1024;
constexpr uint32_t kRecvMaxFds = 64;

/**
 * One recvmsg(2) with SCM_RIGHTS, off the JS thread: it waits for as long as the peer is silent.
 * On libuv's pool rather than a thread of its own (as a pump has): a call lasts until the peer's
 * next message, not a whole stream. But while it waits it holds one of the pool's threads (4 by
 * default, shared with fs), so callers keep at most one pending per connection.
 * Descriptors received but not handed over to JavaScript (OnOK did not get that far) are closed by
 * the destructor rather than leaked.
 */
class RecvWithFdsWorker : public Napi::AsyncWorker {
 public:
  RecvWithFdsWorker(Napi::Env env, int fd, uint32_t max_bytes, uint32_t max_fds)
      : Napi::AsyncWorker(env, "recvWithFds"), fd_(fd), max_bytes_(max_bytes), max_fds_(max_fds), deferred_(env) {}

  ~RecvWithFdsWorker() override {
    for (size_t i = 0; i < fd_count_; i++) close(fds_[i]);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    // Not zeroed: the kernel writes what it returns, and the rest is never read (nor touched, so a
    // 1 MiB buffer for a 5-byte message costs no more than its first page).
    data_.reset(new (std::nothrow) uint8_t[max_bytes_]);
    if (!data_) return Fail(ENOMEM, "recvmsg", "no memory for the read buffer");
    alignas(struct cmsghdr) uint8_t control[CMSG_SPACE(kRecvMaxFds * sizeof(int))];
    bool hung_up = false;
    for (;;) {
      struct iovec iov = {data_.get(), max_bytes_};
      struct msghdr msg = {};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      // CMSG_LEN, not CMSG_SPACE: the kernel fits as many descriptors as the length has room for,
      // and CMSG_SPACE rounds an odd count up to room for one more, which would arrive untruncated.
      msg.msg_controllen = CMSG_LEN(max_fds_ * sizeof(int));
      // MSG_CMSG_CLOEXEC: the descriptors are installed close-on-exec atomically, so no child
      // spawned meanwhile inherits one (a stray child's copy of a pipe end keeps the pipe open
      // after ferry closes its own, and CRIU's writer would never see EPIPE).
      // MSG_DONTWAIT: every wait is the poll below, blocking fd or not, and the fd's O_NONBLOCK
      // (shared with Node, which set it on the sockets it accepts) is left alone.
      ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n >= 0) return Received(msg, static_cast<size_t>(n));
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return Fail(errno, "recvmsg");
      // poll said the socket hung up, and there is still nothing to read: that is the end.
      if (hung_up) return;
      // poll(2) wakes when bytes arrive, when the peer closes or shuts down its writing, and at
      // shutdown(fd, SHUT_RD) here: the way TypeScript stops a pending call (closing fd instead
      // would free its number for reuse under this call).
      struct pollfd entry = {fd_, POLLIN, 0};
      if (poll(&entry, 1, -1) == -1) {
        if (errno == EINTR) continue;
        return Fail(errno, "poll");
      }
      if (entry.revents & POLLNVAL) return Fail(EBADF, "poll", "the descriptor was closed");
      hung_up = (entry.revents & (POLLHUP | POLLERR)) != 0 && (entry.revents & POLLIN) == 0;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err_ != 0) {
      deferred_.Reject(MakeSyscallError(env, err_, syscall_, detail_).Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    // A copy of what arrived (at most 1 MiB): the buffer was sized for the most the call could take.
    result.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, data_.get(), size_));
    data_.reset();
    Napi::Array fds = Napi::Array::New(env, fd_count_);
    for (size_t i = 0; i < fd_count_; i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds_[i]));
    result.Set("fds", fds);
    // From here on the descriptors are JavaScript's.
    fd_count_ = 0;
    deferred_.Resolve(result);
  }

 private:
  void Fail(int err, const char* syscall, std::string detail = std::string()) {
    err_ = err;
    syscall_ = syscall;
    detail_ = std::move(detail);
  }

  void Received(struct msghdr& msg, size_t n) {
    size_ = n;
    // MSG_CTRUNC: the peer sent more descriptors than there was room for; the kernel installed
    // those that fit and closed the rest. (Also set if another control message did not fit, e.g.
    // credentials with SO_PASSCRED: then too the message was not received whole.)
    bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
      if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
        // More than maxFds cannot fit the control length asked for; if the kernel found a way,
        // they are not ours to keep either.
        if (fd_count_ < max_fds_) {
          fds_[fd_count_++] = fd;
        } else {
          close(fd);
          truncated = true;
        }
      }
    }
    if (!truncated) return;
    // Half a message's descriptors are of no use to anyone, and the caller never sees their
    // numbers: closed here, or they would leak. The bytes that came with them are consumed too.
    std::string detail = "more descriptors than maxFds (" + std::to_string(max_fds_) + ") were sent; the " +
                         std::to_string(fd_count_) + " that arrived were closed";
    for (size_t i = 0; i < fd_count_; i++) close(fds_[i]);
    fd_count_ = 0;
    size_ = 0;
    Fail(EMSGSIZE, "recvmsg", std::move(detail));
  }

  const int fd_;
  const uint32_t max_bytes_;
  const uint32_t max_fds_;
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  int fds_[kRecvMaxFds];
  size_t fd_count_ = 0;
  int err_ = 0;
  const char* syscall_ = nullptr;
  std::string detail_;
};

Napi::Value RecvWithFds(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  uint32_t max_bytes = Uint32Arg(info, 1, "maxBytes", 1, kRecvMaxBytes);
  uint32_t max_fds = Uint32Arg(info, 2, "maxFds", 1, kRecvMaxFds);
  auto* worker = new RecvWithFdsWorker(info.Env(), fd, max_bytes, max_fds);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("setsockoptInt", Napi::Function::New(env, SetsockoptInt, "setsockoptInt"));
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("recvWithFds", Napi::Function::New(env, RecvWithFds, "recvWithFds"));
  SetConstant(env, exports, "IPPROTO_TCP", IPPROTO_TCP);
  SetConstant(env, exports, "TCP_REPAIR", TCP_REPAIR);
  SetConstant(env, exports, "SHUT_RD", SHUT_RD);
  SetConstant(env, exports, "SHUT_WR", SHUT_WR);
  SetConstant(env, exports, "SHUT_RDWR", SHUT_RDWR);
  SetConstant(env, exports, "SOL_SOCKET", SOL_SOCKET);
  SetConstant(env, exports, "SO_SNDBUF", SO_SNDBUF);
  SetConstant(env, exports, "SO_RCVBUF", SO_RCVBUF);
  SetConstant(env, exports, "SO_SNDBUFFORCE", SO_SNDBUFFORCE);
  SetConstant(env, exports, "SO_RCVBUFFORCE", SO_RCVBUFFORCE);
}

}  // namespace ferry
