// Each file registers its functions and the kernel constants they take.
#pragma once

#include <napi.h>

namespace ferry {

void InitMount(Napi::Env env, Napi::Object exports);
void InitPidfd(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitSockets(Napi::Env env, Napi::Object exports);
void InitPump(Napi::Env env, Napi::Object exports);
void InitAead(Napi::Env env, Napi::Object exports);
void InitPageDelta(Napi::Env env, Napi::Object exports);

inline void SetConstant(Napi::Env env, Napi::Object exports, const char* name, double value) {
  exports.Set(name, Napi::Number::New(env, value));
}

}  // namespace ferry
