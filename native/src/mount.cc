// mount(2) and umount2(2), both asynchronous: they may wait on a remote filesystem server.
#include <sys/mount.h>

#include "args.h"
#include "exports.h"
#include "syscall-worker.h"

namespace ferry {

namespace {

const char* OrNull(const std::optional<std::string>& value) { return value ? value->c_str() : nullptr; }

Napi::Value Mount(const Napi::CallbackInfo& info) {
  auto source = NullableStringArg(info, 0, "source");
  auto target = StringArg(info, 1, "target");
  auto fstype = NullableStringArg(info, 2, "fstype");
  uint32_t flags = Uint32Arg(info, 3, "flags");
  auto data = NullableStringArg(info, 4, "data");
  auto* worker = new SyscallWorker(info.Env(), "mount", [=]() {
    return mount(OrNull(source), target.c_str(), OrNull(fstype), flags, OrNull(data));
  });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Umount2(const Napi::CallbackInfo& info) {
  auto target = StringArg(info, 0, "target");
  int32_t flags = Int32Arg(info, 1, "flags");
  auto* worker = new SyscallWorker(info.Env(), "umount2", [=]() { return umount2(target.c_str(), flags); });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void InitMount(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("umount2", Napi::Function::New(env, Umount2, "umount2"));
  SetConstant(env, exports, "MS_RDONLY", MS_RDONLY);
  SetConstant(env, exports, "MS_NOSUID", MS_NOSUID);
  SetConstant(env, exports, "MS_NODEV", MS_NODEV);
  SetConstant(env, exports, "MS_NOEXEC", MS_NOEXEC);
  SetConstant(env, exports, "MS_REMOUNT", MS_REMOUNT);
  SetConstant(env, exports, "MS_BIND", MS_BIND);
  SetConstant(env, exports, "MS_REC", MS_REC);
  SetConstant(env, exports, "MS_PRIVATE", MS_PRIVATE);
  SetConstant(env, exports, "MS_SLAVE", MS_SLAVE);
  SetConstant(env, exports, "MS_SHARED", MS_SHARED);
  SetConstant(env, exports, "MNT_FORCE", MNT_FORCE);
  SetConstant(env, exports, "MNT_DETACH", MNT_DETACH);
  SetConstant(env, exports, "UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW);
}

}  // namespace ferry
