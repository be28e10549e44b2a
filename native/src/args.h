// Argument readers for the wrappers. TypeScript validates everything before calling in; these
// checks only keep a wrong call from reaching the kernel with garbage (a TypeError, never a crash).
#pragma once

#include <napi.h>

#include <cstdint>
#include <optional>
#include <string>

namespace ferry {

int32_t Int32Arg(const Napi::CallbackInfo& info, size_t index, const char* name);
uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name);
/** An unsigned integer in [min, max] (bounds that keep an allocation sane if TypeScript is bypassed). */
uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name, uint32_t min, uint32_t max);
/** A non-negative integer JavaScript holds exactly (at most 2^53 - 1). */
uint64_t SafeUint64Arg(const Napi::CallbackInfo& info, size_t index, const char* name);
bool BoolArg(const Napi::CallbackInfo& info, size_t index, const char* name);
/** Copies a Uint8Array (or Buffer) of exactly `size` bytes into `out`. */
void FixedBytesArg(const Napi::CallbackInfo& info, size_t index, const char* name, uint8_t* out, size_t size);
/** A string without NUL bytes (a NUL would silently truncate the C string the kernel sees). */
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
/** Like StringArg, but null maps to std::nullopt (passed to the kernel as a NULL pointer). */
std::optional<std::string> NullableStringArg(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace ferry
