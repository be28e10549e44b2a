// setns(2) and unshare(2). Both act on the calling thread only (the JS main thread), never on
// libuv's thread pool, and the kernel refuses mount-namespace changes (EINVAL) in a process that
// has other threads -- which every Node process has. See README.md.
#include <sched.h>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value Setns(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  int32_t nstype = Int32Arg(info, 1, "nstype");
  if (setns(fd, nstype) == -1) throw MakeSyscallError(info.Env(), errno, "setns");
  return info.Env().Undefined();
}

Napi::Value Unshare(const Napi::CallbackInfo& info) {
  int32_t flags = Int32Arg(info, 0, "flags");
  if (unshare(flags) == -1) throw MakeSyscallError(info.Env(), errno, "unshare");
  return info.Env().Undefined();
}

}  // namespace

void InitNamespaces(Napi::Env env, Napi::Object exports) {
  exports.Set("setns", Napi::Function::New(env, Setns, "setns"));
  exports.Set("unshare", Napi::Function::New(env, Unshare, "unshare"));
  SetConstant(env, exports, "CLONE_NEWNS", CLONE_NEWNS);
  SetConstant(env, exports, "CLONE_NEWNET", CLONE_NEWNET);
  SetConstant(env, exports, "CLONE_NEWUTS", CLONE_NEWUTS);
  SetConstant(env, exports, "CLONE_NEWIPC", CLONE_NEWIPC);
  SetConstant(env, exports, "CLONE_NEWPID", CLONE_NEWPID);
}

}  // namespace ferry
