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
 * Starts `job` on a new thread named `thread_name` (at most 15 characters, shown by `top -H`)
 * and returns the Promise it settles. A thread that cannot be created rejects the Promise.
 */
Napi::Promise StartThreadJob(Napi::Env env, std::shared_ptr<ThreadJob> job, const char* resource_name, const char* thread_name);

}  // namespace ferry
