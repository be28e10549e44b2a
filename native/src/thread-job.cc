#include "thread-job.h"

#include <pthread.h>
#include <signal.h>

#include <system_error>
#include <thread>

#include "syscall-error.h"

namespace ferry {

using JobRef = std::shared_ptr<ThreadJob>;

struct ThreadJobAccess {
  using Tsfn = Napi::TypedThreadSafeFunction<ThreadJob, void>;

  /** The ThreadSafeFunction's finalizer, on the JS thread: after the job released it, or at teardown. */
  static void Settle(Napi::Env env, JobRef* ref, ThreadJob* /*context*/) {
    JobRef job = std::move(*ref);
    delete ref;
    std::lock_guard<std::mutex> lock(job->mutex_);
    if (!job->done_) {
      job->abandoned_ = true;
      return;
    }
    Napi::HandleScope scope(env);
    if (job->err != 0) {
      job->deferred_->Reject(MakeSyscallError(env, job->err, job->syscall, job->detail).Value());
      return;
    }
    // Result may throw (an allocation refused by V8): that rejects rather than leaving it pending.
    try {
      job->deferred_->Resolve(job->Result(env));
    } catch (const Napi::Error& error) {
      job->deferred_->Reject(error.Value());
    }
  }

  static void RunOnThread(const JobRef& job, Tsfn tsfn, const char* thread_name) {
    // Asynchronous signals go to the other threads: here they would only interrupt poll(2) with
    // EINTR, while Node's handlers (libuv's signal pipe) work from whichever thread takes them. The
    // synchronous ones stay unblocked: blocked, a fault would kill the process without its handler.
    sigset_t blocked;
    sigfillset(&blocked);
    for (int sync_signal : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) sigdelset(&blocked, sync_signal);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    pthread_setname_np(pthread_self(), thread_name);
    job->Run();
    std::lock_guard<std::mutex> lock(job->mutex_);
    job->done_ = true;
    if (!job->abandoned_) tsfn.Release();
  }
};

Napi::Promise StartThreadJob(Napi::Env env, JobRef job, const char* resource_name, const char* thread_name) {
  job->deferred_ = std::make_unique<Napi::Promise::Deferred>(env);
  Napi::Promise promise = job->deferred_->Promise();
  auto tsfn = ThreadJobAccess::Tsfn::New(env, resource_name, 0, 1, job.get(), ThreadJobAccess::Settle, new JobRef(job));
  try {
    std::thread(ThreadJobAccess::RunOnThread, job, tsfn, thread_name).detach();
  } catch (const std::system_error& error) {
    {
      std::lock_guard<std::mutex> lock(job->mutex_);
      job->err = error.code().value();
      job->syscall = "pthread_create";
      job->detail = std::string("no thread for ") + resource_name;
      job->done_ = true;
    }
    tsfn.Release();
  }
  return promise;
}

}  // namespace ferry
