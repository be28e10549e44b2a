// aeadInPlace(seal, key, nonce, aad, data, tag) -> boolean: AES-256-GCM over a buffer in place,
// on the calling (JS) thread. For the NATS path's frames, which must pass through JavaScript
// anyway: node:crypto's update() allocates a fresh output buffer per call, and on a VM where
// touching fresh memory is slow, that allocation (and the garbage it becomes) cost as much as the
// cipher itself. At ~3 GB/s a 4 MiB frame takes ~1.3 ms, short enough to run inline.
//   seal: encrypts `data` in place and writes the 16-byte tag into `tag`; returns true.
//   open: decrypts `data` in place if `tag` authenticates it (returns true); on a bad tag returns
//         false, and `data` then holds garbage that must not be used.
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <climits>

#include "args.h"
#include "exports.h"

namespace ferry {

namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a Uint8Array");
  }
  return info[index].As<Napi::Uint8Array>();
}

Napi::Value AeadInPlace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool seal = BoolArg(info, 0, "seal");
  uint8_t key[kKeyBytes];
  uint8_t nonce[kNonceBytes];
  FixedBytesArg(info, 1, "key", key, kKeyBytes);
  FixedBytesArg(info, 2, "nonce", nonce, kNonceBytes);
  Napi::Uint8Array aad = BytesArg(info, 3, "aad");
  Napi::Uint8Array data = BytesArg(info, 4, "data");
  Napi::Uint8Array tag = BytesArg(info, 5, "tag");
  if (tag.ByteLength() != kTagBytes) throw Napi::TypeError::New(env, "argument 'tag' must be exactly 16 bytes");
  if (data.ByteLength() > INT_MAX || aad.ByteLength() > INT_MAX) throw Napi::TypeError::New(env, "argument too large");

  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  bool ok = ctx != nullptr;
  int len = 0;
  if (ok) {
    ok = (seal ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, nonce)
               : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, nonce)) == 1;
  }
  OPENSSL_cleanse(key, sizeof(key));
  uint8_t* bytes = data.Data();
  int bytes_len = static_cast<int>(data.ByteLength());
  bool authentic = true;
  if (ok && seal) {
    ok = (aad.ByteLength() == 0 || EVP_EncryptUpdate(ctx, nullptr, &len, aad.Data(), static_cast<int>(aad.ByteLength())) == 1) &&
         (bytes_len == 0 || EVP_EncryptUpdate(ctx, bytes, &len, bytes, bytes_len) == 1) &&
         EVP_EncryptFinal_ex(ctx, bytes + bytes_len, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, tag.Data()) == 1;
  } else if (ok) {
    ok = (aad.ByteLength() == 0 || EVP_DecryptUpdate(ctx, nullptr, &len, aad.Data(), static_cast<int>(aad.ByteLength())) == 1) &&
         (bytes_len == 0 || EVP_DecryptUpdate(ctx, bytes, &len, bytes, bytes_len) == 1) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.Data()) == 1;
    // A failed final is a bad tag, not an OpenSSL failure.
    if (ok) authentic = EVP_DecryptFinal_ex(ctx, bytes + bytes_len, &len) == 1;
  }
  EVP_CIPHER_CTX_free(ctx);
  ERR_clear_error();
  if (!ok) throw Napi::Error::New(env, "aeadInPlace: AES-256-GCM failed inside OpenSSL");
  return Napi::Boolean::New(env, authentic);
}

}  // namespace

void InitAead(Napi::Env env, Napi::Object exports) {
  exports.Set("aeadInPlace", Napi::Function::New(env, AeadInPlace, "aeadInPlace"));
}

}  // namespace ferry
