// Runs one blocking syscall on libuv's thread pool and settles a Promise with its outcome.
// mount(2) and umount2(2) can block for seconds (FUSE/NFS servers, sshfs over a slow link),
// which must not stall the agent's event loop.
#pragma once

#include <napi.h>

#include <functional>

#include "syscall-error.h"

namespace ferry {

class SyscallWorker : public Napi::AsyncWorker {
 public:
  /** `call` runs off the JS thread; it must return -1 and leave errno set on failure. */
  SyscallWorker(Napi::Env env, const char* syscall, std::function<int()> call)
      : Napi::AsyncWorker(env, syscall), syscall_(syscall), call_(std::move(call)), deferred_(env) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (call_() == -1) errno_ = errno;
  }

  void OnOK() override {
    Napi::HandleScope scope(Env());
    if (errno_ != 0) {
      deferred_.Reject(MakeSyscallError(Env(), errno_, syscall_).Value());
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }

 private:
  const char* syscall_;
  std::function<int()> call_;
  Napi::Promise::Deferred deferred_;
  int errno_ = 0;
};

}  // namespace ferry
