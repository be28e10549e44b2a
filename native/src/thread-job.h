// Runs a job on a std::thread of its own and settles a Promise with its outcome on the JS thread,
// for jobs that last as long as a stream: sealedPump, precopyRead, dedupPages.
//
// Why not an AsyncWorker: libuv's pool has 4 threads by default, shared with fs, dns and zlib; one
// page tunnel (a pump each way) would take half of it, two would starve every fs call. So each job
// gets a dedicated std::thread, and a TypedThreadSafeFunction with no JS callback carries the
// outcome back: the thread releases it when done, and its finalizer, on the JS thread, settles the
// Promise. While a job runs, it keeps the event loop alive, as a pending AsyncWorker would.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

namespace ferry {

class ThreadJob {
 public:
  virtual ~ThreadJob() = default;

  /** The work, on the job's thread. Set `err` (and `syscall`, `detail`) to reject. */
  virtual void Run() = 0;
  /** On the JS thread, after Run, when `err` is 0: what the Promise resolves with. */
  virtual Napi::Value Result(Napi::Env env) = 0;

  int err = 0;
  const char* syscall = nullptr;
  std::string detail;

 private:
  friend Napi::Promise StartThreadJob(Napi::Env, std::shared_ptr<ThreadJob>, const char*, const char*);
  friend struct ThreadJobAccess;
  std::unique_ptr<Napi::Promise::Deferred> deferred_;
  std::mutex mutex_;
  /** Run has returned and the job is done with everything but the Promise. */
  bool done_ = false;
  /**
   * The environment was torn down (a worker_thread terminated) while the job still ran: the
   * ThreadSafeFunction is gone, so the thread must not release it, and the Promise stays unsettled.
   */
  bool abandoned_ = false;
};

/**
 * A ThreadJob whose work is one call from its config to an outcome that carries err, syscall and
 * detail (the sealed pump, precopyRead, dedupPages, lazyServe): Run makes the call and takes those
 * over; a subclass says, in Result, what the Promise resolves with from `outcome_`.
 */
template <typename Config, typename Outcome, auto Work>
class OutcomeJob : public ThreadJob {
 public:
  Config config;

  void Run() final {
    outcome_ = Work(config);
    err = outcome_.err;
    syscall = outcome_.syscall;
    detail = outcome_.detail;
  }

 protected:
  Outcome outcome_;
};

/**
 * Starts `job` on a new thread named `thread_name` (at most 15 characters, shown by `top -H`)
 * and returns the Promise it settles. A thread that cannot be created rejects the Promise.
 */
Napi::Promise StartThreadJob(Napi::Env env, std::shared_ptr<ThreadJob> job, const char* resource_name, const char* thread_name);

}  // namespace ferry
