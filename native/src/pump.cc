// sealedPump(inFd, outFd, mode, key, noncePrefix, frameBytes, shutdownOut, cancelFd, maxOutBytes) -> Promise<counts>:
// runs RunSealedPump (sealed-pump.cc) on a thread of its own and settles the Promise on the JS
// thread. No JavaScript runs per byte.
//
// Why not an AsyncWorker: a pump lives as long as its stream (a whole migration), and libuv's pool
// has 4 threads by default, shared with fs, dns and zlib; one tunnel (a pump each way) would take
// half of it, two would starve every fs call. So each pump gets a dedicated std::thread, and a
// ThreadSafeFunction with no JS callback brings the outcome back: the thread releases it when done,
// and its finalizer, which runs on the JS thread, settles the Promise. While a pump runs, its
// ThreadSafeFunction keeps the event loop alive, as a pending AsyncWorker would.
#include <pthread.h>
#include <signal.h>

#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "args.h"
#include "exports.h"
#include "sealed-pump.h"
#include "syscall-error.h"

namespace ferry {

namespace {

struct PumpJob {
  explicit PumpJob(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}

  PumpConfig config;
  PumpOutcome outcome;
  Napi::Promise::Deferred deferred;
  std::mutex mutex;
  /** The thread has filled `outcome` and is done with the job. */
  bool done = false;
  /**
   * The environment was torn down (a worker_thread terminated) while the pump still ran: the
   * ThreadSafeFunction is gone, so the thread must not release it, and the Promise stays unsettled.
   */
  bool abandoned = false;
};

using JobRef = std::shared_ptr<PumpJob>;
using PumpTsfn = Napi::TypedThreadSafeFunction<PumpJob, void>;

Napi::Object Counts(Napi::Env env, const PumpOutcome& outcome) {
  Napi::Object counts = Napi::Object::New(env);
  // Exact up to 2^53 bytes, far beyond any stream.
  counts.Set("bytesIn", Napi::Number::New(env, static_cast<double>(outcome.bytes_in)));
  counts.Set("bytesOut", Napi::Number::New(env, static_cast<double>(outcome.bytes_out)));
  counts.Set("frames", Napi::Number::New(env, static_cast<double>(outcome.frames)));
  return counts;
}

/** The ThreadSafeFunction's finalizer, on the JS thread: after the pump released it, or at teardown. */
void Settle(Napi::Env env, JobRef* ref, PumpJob* /*context*/) {
  JobRef job = std::move(*ref);
  delete ref;
  std::lock_guard<std::mutex> lock(job->mutex);
  if (!job->done) {
    job->abandoned = true;
    return;
  }
  Napi::HandleScope scope(env);
  const PumpOutcome& outcome = job->outcome;
  if (outcome.err != 0) {
    job->deferred.Reject(MakeSyscallError(env, outcome.err, outcome.syscall, outcome.detail).Value());
  } else {
    job->deferred.Resolve(Counts(env, outcome));
  }
}

void RunOnPumpThread(const JobRef& job, PumpTsfn tsfn) {
  // Asynchronous signals go to the other threads: here they would only interrupt poll(2) with
  // EINTR, while Node's handlers (libuv's signal pipe) work from whichever thread takes them. The
  // synchronous ones stay unblocked: blocked, a fault would kill the process without its handler.
  sigset_t blocked;
  sigfillset(&blocked);
  for (int sync_signal : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) sigdelset(&blocked, sync_signal);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  // Shown by `top -H` and in /proc/PID/task/TID/comm (at most 15 characters).
  pthread_setname_np(pthread_self(), job->config.seal ? "ferry-seal" : "ferry-open");
  PumpOutcome outcome = RunSealedPump(job->config);
  std::lock_guard<std::mutex> lock(job->mutex);
  job->outcome = std::move(outcome);
  job->done = true;
  if (!job->abandoned) tsfn.Release();
}

Napi::Value SealedPump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<PumpJob>(env);
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

  PumpTsfn tsfn = PumpTsfn::New(env, "sealedPump", 0, 1, job.get(), Settle, new JobRef(job));
  Napi::Promise promise = job->deferred.Promise();
  try {
    std::thread(RunOnPumpThread, job, tsfn).detach();
  } catch (const std::system_error& err) {
    {
      std::lock_guard<std::mutex> lock(job->mutex);
      job->outcome.err = err.code().value();
      job->outcome.syscall = "pthread_create";
      job->outcome.detail = "no thread for the pump";
      job->done = true;
    }
    tsfn.Release();
  }
  return promise;
}

}  // namespace

void InitPump(Napi::Env env, Napi::Object exports) {
  exports.Set("sealedPump", Napi::Function::New(env, SealedPump, "sealedPump"));
}

}  // namespace ferry
