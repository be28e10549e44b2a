// Builds the one error shape every wrapper raises: an Error carrying errno, code and syscall,
// so TypeScript can branch on `code` instead of message text.
#pragma once

#include <napi.h>

namespace ferry {

/** An Error whose message is "<syscall>: <CODE> (<strerror>)" with errno/code/syscall properties. */
Napi::Error MakeSyscallError(Napi::Env env, int err, const char* syscall);

}  // namespace ferry
