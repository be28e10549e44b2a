// waitpid(2) with WNOHANG and prctl(PR_SET_CHILD_SUBREAPER). A subreaper adopts orphaned
// descendants (e.g. a tree `criu restore -d` leaves behind); libuv only reaps children it
// spawned itself, so those adopted ones must be reaped here or they stay zombies.
#include <sys/prctl.h>
#include <sys/wait.h>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value WaitpidNoHang(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = Int32Arg(info, 0, "pid");
  int status = 0;
  pid_t reaped = waitpid(pid, &status, WNOHANG);
  if (reaped == -1) throw MakeSyscallError(env, errno, "waitpid");
  if (reaped == 0) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, reaped));
  bool exited = WIFEXITED(status);
  result.Set("exited", Napi::Boolean::New(env, exited));
  // Exit code when it exited; otherwise the raw wait status (without WUNTRACED/WCONTINUED the
  // only other outcome is death by a signal, given in `signal`).
  result.Set("status", Napi::Number::New(env, exited ? WEXITSTATUS(status) : status));
  result.Set("signal", WIFSIGNALED(status) ? Napi::Number::New(env, WTERMSIG(status)) : env.Null());
  return result;
}

Napi::Value SetChildSubreaper(const Napi::CallbackInfo& info) {
  bool on = BoolArg(info, 0, "on");
  if (prctl(PR_SET_CHILD_SUBREAPER, on ? 1UL : 0UL, 0UL, 0UL, 0UL) == -1) {
    throw MakeSyscallError(info.Env(), errno, "prctl");
  }
  return info.Env().Undefined();
}

}  // namespace

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("waitpidNoHang", Napi::Function::New(env, WaitpidNoHang, "waitpidNoHang"));
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
}

}  // namespace ferry
