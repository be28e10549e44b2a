// Builds the one error shape every wrapper raises: an Error carrying errno, code and syscall,
// so TypeScript can branch on `code` instead of message text.
#pragma once

#include <napi.h>

#include <string>

namespace ferry {

/** An Error whose message is "<syscall>: <CODE> (<strerror>)" with errno/code/syscall properties. */
Napi::Error MakeSyscallError(Napi::Env env, int err, const char* syscall);
/** As above, with ": <detail>" appended to the message (what the call was doing when it failed). */
Napi::Error MakeSyscallError(Napi::Env env, int err, const char* syscall, const std::string& detail);

}  // namespace ferry
