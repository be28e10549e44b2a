#include "args.h"

#include <cmath>
#include <cstring>

namespace ferry {

namespace {

[[noreturn]] void ThrowType(Napi::Env env, const char* name, const char* expected) {
  throw Napi::TypeError::New(env, std::string("argument '") + name + "' must be " + expected);
}

double IntegerArg(const Napi::CallbackInfo& info, size_t index, const char* name, double min, double max) {
  if (index >= info.Length() || !info[index].IsNumber()) ThrowType(info.Env(), name, "a number");
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (std::trunc(value) != value || value < min || value > max) ThrowType(info.Env(), name, "an integer in range");
  return value;
}

}  // namespace

int32_t Int32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return static_cast<int32_t>(IntegerArg(info, index, name, INT32_MIN, INT32_MAX));
}

uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return static_cast<uint32_t>(IntegerArg(info, index, name, 0, UINT32_MAX));
}

uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name, uint32_t min, uint32_t max) {
  return static_cast<uint32_t>(IntegerArg(info, index, name, min, max));
}

uint64_t SafeUint64Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return static_cast<uint64_t>(IntegerArg(info, index, name, 0, 9007199254740991.0));
}

bool BoolArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsBoolean()) ThrowType(info.Env(), name, "a boolean");
  return info[index].As<Napi::Boolean>().Value();
}

void FixedBytesArg(const Napi::CallbackInfo& info, size_t index, const char* name, uint8_t* out, size_t size) {
  if (index >= info.Length() || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(info.Env(), name, "a Uint8Array");
  }
  auto bytes = info[index].As<Napi::Uint8Array>();
  if (bytes.ByteLength() != size) {
    ThrowType(info.Env(), name, ("exactly " + std::to_string(size) + " bytes").c_str());
  }
  std::memcpy(out, bytes.Data(), size);
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsString()) ThrowType(info.Env(), name, "a string");
  std::string value = info[index].As<Napi::String>().Utf8Value();
  if (value.find('\0') != std::string::npos) ThrowType(info.Env(), name, "a string without NUL bytes");
  return value;
}

std::optional<std::string> NullableStringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index < info.Length() && info[index].IsNull()) return std::nullopt;
  return StringArg(info, index, name);
}

}  // namespace ferry
