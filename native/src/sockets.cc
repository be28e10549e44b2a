// setsockopt(2) with an int value: what TCP repair needs (TCP_REPAIR off on a socket CRIU left in
// repair mode, taken from the frozen workload with pidfd_getfd). Which option to set is policy,
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

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("setsockoptInt", Napi::Function::New(env, SetsockoptInt, "setsockoptInt"));
  SetConstant(env, exports, "IPPROTO_TCP", IPPROTO_TCP);
  SetConstant(env, exports, "TCP_REPAIR", TCP_REPAIR);
}

}  // namespace ferry
