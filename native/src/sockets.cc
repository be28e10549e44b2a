// Socket calls Node lacks. setsockopt(2) with an int value: what TCP repair needs (TCP_REPAIR off on
// a socket CRIU left in repair mode, taken from the frozen workload with pidfd_getfd). socketpair(2):
// a Unix stream pair whose one end a child (CRIU's page server client) gets through spawn's stdio
// while a sealed pump owns the other. shutdown(2): half-closes a stream (and is how TypeScript
// wakes a pump's cancel descriptor). Which option to set, what to shut down and when is policy,
// decided in TypeScript.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("setsockoptInt", Napi::Function::New(env, SetsockoptInt, "setsockoptInt"));
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
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
