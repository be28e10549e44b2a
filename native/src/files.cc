// lseek(2) and close(2) on raw descriptors. Node's fs has no lseek (its reads take positions, but
// a descriptor handed to CRIU must carry its own offset); close releases what the pidfd calls return.
// fcntl(F_SETPIPE_SZ): Node has no fcntl at all.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <climits>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  // Offsets past 2^53 cannot come from JS numbers; the TS side rejects them before the call.
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int32_t whence = Int32Arg(info, 2, "whence");
  off_t result = lseek(fd, static_cast<off_t>(offset), whence);
  if (result == -1) throw MakeSyscallError(info.Env(), errno, "lseek");
  return Napi::Number::New(info.Env(), static_cast<double>(result));
}

// ioctl(FIONREAD): bytes waiting to be read in a pipe, FIFO or socket. Node has no ioctl; the
// pre-flight asks it of a workload's pipes (opened anew through /proc/PID/fd) without reading them.
Napi::Value UnreadBytes(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) == -1) throw MakeSyscallError(info.Env(), errno, "ioctl");
  return Napi::Number::New(info.Env(), n);
}

// fcntl(F_SETPIPE_SZ): a pipe's capacity. CRIU's image streaming writes each image into a pipe,
// and at the default 64 KiB (16 pages) it waits for the reader whenever that much is unread. The
// kernel rounds the size up (a power-of-two number of pages) and returns what it set, which is what
// the caller gets. Whether EPERM (above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE) is
// fatal is the caller's decision.
Napi::Value SetPipeSize(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  // fcntl takes the size as an int; 0 is no size (the kernel says EINVAL).
  uint32_t bytes = Uint32Arg(info, 1, "bytes", 1, INT_MAX);
  int result = fcntl(fd, F_SETPIPE_SZ, static_cast<int>(bytes));
  if (result == -1) throw MakeSyscallError(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), result);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  // No retry on EINTR: on Linux the descriptor is released even then, and retrying could
  // close a descriptor another thread has just been given.
  if (close(fd) == -1) throw MakeSyscallError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("lseek", Napi::Function::New(env, Lseek, "lseek"));
  exports.Set("unreadBytes", Napi::Function::New(env, UnreadBytes, "unreadBytes"));
  exports.Set("setPipeSize", Napi::Function::New(env, SetPipeSize, "setPipeSize"));
  SetConstant(env, exports, "SEEK_SET", SEEK_SET);
  SetConstant(env, exports, "SEEK_CUR", SEEK_CUR);
  SetConstant(env, exports, "SEEK_END", SEEK_END);
}

}  // namespace ferry
