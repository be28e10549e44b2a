// linkat(2), statx(2), lseek(2), close(2): the file-descriptor calls Node's fs module does not offer
// (fs has no dirfd/flags variants and no mount id).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "exports.h"
#include "syscall-error.h"

namespace ferry {

namespace {

Napi::Value Linkat(const Napi::CallbackInfo& info) {
  int32_t old_dirfd = Int32Arg(info, 0, "olddirfd");
  auto old_path = StringArg(info, 1, "oldpath");
  int32_t new_dirfd = Int32Arg(info, 2, "newdirfd");
  auto new_path = StringArg(info, 3, "newpath");
  int32_t flags = Int32Arg(info, 4, "flags");
  if (linkat(old_dirfd, old_path.c_str(), new_dirfd, new_path.c_str(), flags) == -1) {
    throw MakeSyscallError(info.Env(), errno, "linkat");
  }
  return info.Env().Undefined();
}

Napi::Value Statx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t dirfd = Int32Arg(info, 0, "dirfd");
  auto path = StringArg(info, 1, "path");
  int32_t flags = Int32Arg(info, 2, "flags");
  uint32_t mask = Uint32Arg(info, 3, "mask");
  struct statx stx = {};
  if (statx(dirfd, path.c_str(), flags, mask, &stx) == -1) throw MakeSyscallError(env, errno, "statx");
  Napi::Object result = Napi::Object::New(env);
  // The kernel may fill fewer fields than asked for (e.g. no mount id before Linux 5.8);
  // `mask` says which ones are valid.
  result.Set("mask", Napi::Number::New(env, stx.stx_mask));
  result.Set("mode", Napi::Number::New(env, stx.stx_mode));
  result.Set("nlink", Napi::Number::New(env, stx.stx_nlink));
  result.Set("uid", Napi::Number::New(env, stx.stx_uid));
  result.Set("gid", Napi::Number::New(env, stx.stx_gid));
  // Inode numbers are 64-bit identities (overlayfs xino uses the high bits): BigInt keeps them exact.
  result.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(stx.stx_ino)));
  result.Set("size", Napi::Number::New(env, static_cast<double>(stx.stx_size)));
  result.Set("devMajor", Napi::Number::New(env, stx.stx_dev_major));
  result.Set("devMinor", Napi::Number::New(env, stx.stx_dev_minor));
  result.Set("mntId", Napi::Number::New(env, static_cast<double>(stx.stx_mnt_id)));
  return result;
}

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  int32_t fd = Int32Arg(info, 0, "fd");
  // Offsets past 2^53 cannot come from JS numbers; the TS side rejects them before the call.
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int32_t whence = Int32Arg(info, 2, "whence");
  off_t result = lseek(fd, static_cast<off_t>(offset), whence);
  if (result == -1) throw MakeSyscallError(info.Env(), errno, "lseek");
  return Napi::Number::New(info.Env(), static_cast<double>(result));
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
  exports.Set("linkat", Napi::Function::New(env, Linkat, "linkat"));
  exports.Set("statx", Napi::Function::New(env, Statx, "statx"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("lseek", Napi::Function::New(env, Lseek, "lseek"));
  SetConstant(env, exports, "SEEK_SET", SEEK_SET);
  SetConstant(env, exports, "SEEK_CUR", SEEK_CUR);
  SetConstant(env, exports, "SEEK_END", SEEK_END);
  SetConstant(env, exports, "AT_FDCWD", AT_FDCWD);
  SetConstant(env, exports, "AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW);
  SetConstant(env, exports, "AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW);
  SetConstant(env, exports, "AT_EMPTY_PATH", AT_EMPTY_PATH);
  SetConstant(env, exports, "STATX_TYPE", STATX_TYPE);
  SetConstant(env, exports, "STATX_MODE", STATX_MODE);
  SetConstant(env, exports, "STATX_NLINK", STATX_NLINK);
  SetConstant(env, exports, "STATX_INO", STATX_INO);
  SetConstant(env, exports, "STATX_SIZE", STATX_SIZE);
  SetConstant(env, exports, "STATX_BASIC_STATS", STATX_BASIC_STATS);
  SetConstant(env, exports, "STATX_MNT_ID", STATX_MNT_ID);
}

}  // namespace ferry
