// pidfd_open(2), pidfd_getfd(2). Called through syscall(2) rather than glibc's wrappers
// (glibc >= 2.36) so the addon loads on any glibc >= 2.32 (see syscall-error.cc).
#include <sys/syscall.h>
#include <unistd.h>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int32_t pid = Int32Arg(info, 0, "pid");
  long fd = syscall(SYS_pidfd_open, pid, 0U);
  if (fd == -1) throw MakeSyscallError(info.Env(), errno, "pidfd_open");
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int32_t pidfd = Int32Arg(info, 0, "pidfd");
  int32_t target_fd = Int32Arg(info, 1, "targetFd");
  long fd = syscall(SYS_pidfd_getfd, pidfd, target_fd, 0U);
  if (fd == -1) throw MakeSyscallError(info.Env(), errno, "pidfd_getfd");
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

}  // namespace

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
}

}  // namespace ferry
