// ferry_native: thin wrappers for Linux syscalls Node does not expose. No policy lives here;
// callers in TypeScript validate arguments and decide what to do with each errno.
#include <napi.h>

#include "exports.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ferry::InitMount(env, exports);
  ferry::InitPidfd(env, exports);
  ferry::InitFiles(env, exports);
  ferry::InitSockets(env, exports);
  ferry::InitPump(env, exports);
  ferry::InitAead(env, exports);
  ferry::InitPageDelta(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_native, Init)
