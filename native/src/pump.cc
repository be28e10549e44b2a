// sealedPump(inFd, outFd, mode, key, noncePrefix, frameBytes, shutdownOut, cancelFd, maxOutBytes) -> Promise<counts>:
// runs RunSealedPump (sealed-pump.cc) on a thread of its own (thread-job.h: a pump lives as long as
// its stream, too long for libuv's pool) and settles the Promise on the JS thread. No JavaScript
// runs per byte.
#include <memory>
#include <string>

#include "args.h"
#include "exports.h"
#include "sealed-pump.h"
#include "thread-job.h"

namespace ferry {

namespace {

class PumpJob : public OutcomeJob<PumpConfig, PumpOutcome, RunSealedPump> {
 public:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object counts = Napi::Object::New(env);
    // Exact up to 2^53 bytes, far beyond any stream.
    counts.Set("bytesIn", Napi::Number::New(env, static_cast<double>(outcome_.bytes_in)));
    counts.Set("bytesOut", Napi::Number::New(env, static_cast<double>(outcome_.bytes_out)));
    counts.Set("frames", Napi::Number::New(env, static_cast<double>(outcome_.frames)));
    return counts;
  }
};

Napi::Value SealedPump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<PumpJob>();
  PumpConfig& config = job->config;
  config.in_fd = Int32Arg(info, 0, "inFd");
  config.out_fd = Int32Arg(info, 1, "outFd");
  std::string mode = StringArg(info, 2, "mode");
  if (mode != "seal" && mode != "open") throw Napi::TypeError::New(env, "argument 'mode' must be 'seal' or 'open'");
  config.seal = mode == "seal";
  FixedBytesArg(info, 3, "key", config.key, kSealedKeyBytes);
  FixedBytesArg(info, 4, "noncePrefix", config.nonce_prefix, kSealedNoncePrefixBytes);
  config.frame_bytes = Uint32Arg(info, 5, "frameBytes", kSealedMinFrameBytes, kSealedMaxFrameBytes);
  config.shutdown_out = BoolArg(info, 6, "shutdownOut");
  config.cancel_fd = Int32Arg(info, 7, "cancelFd");
  config.max_out_bytes = info.Length() > 8 ? SafeUint64Arg(info, 8, "maxOutBytes") : 0;
  // Shown by `top -H` and in /proc/PID/task/TID/comm.
  return StartThreadJob(env, job, "sealedPump", config.seal ? "ferry-seal" : "ferry-open");
}

}  // namespace

void InitPump(Napi::Env env, Napi::Object exports) {
  exports.Set("sealedPump", Napi::Function::New(env, SealedPump, "sealedPump"));
}

}  // namespace ferry
