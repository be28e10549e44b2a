#include "syscall-error.h"

#include <string.h>

#include <string>

namespace ferry {

Napi::Error MakeSyscallError(Napi::Env env, int err, const char* syscall) {
  return MakeSyscallError(env, err, syscall, std::string());
}

Napi::Error MakeSyscallError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  // strerrorname_np (glibc >= 2.32) gives the symbolic name ("EPERM"); it returns NULL
  // for numbers glibc does not know, which we report as "E<number>" rather than guess.
  const char* name = strerrorname_np(err);
  std::string code = name != nullptr ? name : "E" + std::to_string(err);
  std::string message = std::string(syscall) + ": " + code + " (" + strerror(err) + ")";
  if (!detail.empty()) message += ": " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

}  // namespace ferry
