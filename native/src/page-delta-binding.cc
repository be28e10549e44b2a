// The pre-copy's three calls, for TypeScript's pre-copy rounds and its dump-time filter:
//   precopyRead(pid, runs, outFd, cancelFd, maxBytes) -> Promise<{ hashes, bytes, unreadableBytes }>
//   buildPageIndex(hashes[]) -> an External holding the PageIndex (synchronous, see below)
//   dedupPages(index, inFd, outFd, cancelFd) -> Promise<{ bytesIn, bytesOut, literalPages, refPages }>
//   lazyServe(sockFd, runs, files, cancelFd, cmdMask, getCmd, replyCmd, closeCmd, forceCloseCmd)
//     -> Promise<{ requests, pages }>: a lazy restore's pre-copied pages to CRIU's daemon (lazy-serve.h)
//   pageRelay(daemonFd, upstreamFd, runs, cancelFd, cmdMask, getCmd, replyCmd, closeCmd, forceCloseCmd,
//             chunkPages, window, cacheBytes, waitForBackground)
//     -> Promise<{ requests, hits, pages, prefetchedPages, unusedPages }>: post-copy's pull (page-relay.h)
// The two Promises run on threads of their own (thread-job.h), like the sealed pump: each lasts as
// long as a stream, too long for libuv's 4-thread pool.
#include <limits>
#include <memory>

#include "args.h"
#include "lazy-serve.h"
#include "little-endian.h"
#include "exports.h"
#include "page-delta.h"
#include "page-relay.h"
#include "precopy-read.h"
#include "thread-job.h"

namespace ferry {

namespace {

/** Marks the Externals buildPageIndex makes, so dedupPages never takes another addon's External for one. */
constexpr napi_type_tag kPageIndexTag = {0x6665727279706167ULL, 0x65696e6465783031ULL};

using IndexRef = std::shared_ptr<const PageIndex>;

[[noreturn]] void ThrowArg(Napi::Env env, const char* name, const std::string& expected) {
  throw Napi::TypeError::New(env, std::string("argument '") + name + "' must be " + expected);
}

Napi::Uint8Array BytesArg(Napi::Env env, Napi::Value value, const char* name) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowArg(env, name, "a Uint8Array");
  }
  return value.As<Napi::Uint8Array>();
}

/** TypeScript checked all of this; re-checked so a direct call cannot make the thread misbehave. */
std::vector<PrecopyRun> RunsArg(const Napi::CallbackInfo& info, size_t index, uint64_t max_bytes) {
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = BytesArg(env, info[index], "runs");
  if (bytes.ByteLength() % 16 != 0 || bytes.ByteLength() / 16 > kPrecopyMaxRuns) {
    ThrowArg(env, "runs", "(address, length) u64 pairs, at most " + std::to_string(kPrecopyMaxRuns));
  }
  std::vector<PrecopyRun> runs(bytes.ByteLength() / 16);
  uint64_t total = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    PrecopyRun& run = runs[i];
    run.address = LoadLe64(bytes.Data() + i * 16);
    run.length = LoadLe64(bytes.Data() + i * 16 + 8);
    if (run.address % kPageBytes != 0 || run.length % kPageBytes != 0 || run.length == 0 ||
        run.address > std::numeric_limits<uint64_t>::max() - run.length) {
      ThrowArg(env, "runs", "page-aligned runs of at least a page, run " + std::to_string(i) + " is not");
    }
    // Compared before adding: a sum that wrapped around would size the hash array too small.
    if (run.length > max_bytes - total) ThrowArg(env, "runs", "at most maxBytes (" + std::to_string(max_bytes) + ") in all");
    total += run.length;
  }
  return runs;
}

class PrecopyJob : public OutcomeJob<PrecopyConfig, PrecopyOutcome, RunPrecopyRead> {
 public:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    Napi::Buffer<uint8_t> hashes;
    if (outcome_.hash_bytes == 0) {
      hashes = Napi::Buffer<uint8_t>::New(env, 0);
    } else {
      // Handed over without a copy (up to 256 MiB); freed with the Buffer.
      uint8_t* data = outcome_.hashes.get();
      hashes = Napi::Buffer<uint8_t>::NewOrCopy(env, data, outcome_.hash_bytes, [](Napi::Env, uint8_t* owned) { delete[] owned; });
      // NewOrCopy may have copied (external buffers forbidden): then the finalizer already ran.
      outcome_.hashes.release();
    }
    result.Set("hashes", hashes);
    result.Set("bytes", Napi::Number::New(env, static_cast<double>(outcome_.bytes)));
    result.Set("unreadableBytes", Napi::Number::New(env, static_cast<double>(outcome_.unreadable_bytes)));
    return result;
  }
};

Napi::Value PrecopyRead(const Napi::CallbackInfo& info) {
  auto job = std::make_shared<PrecopyJob>();
  int32_t pid = Int32Arg(info, 0, "pid");
  if (pid <= 0) ThrowArg(info.Env(), "pid", "> 0");
  job->config.pid = pid;
  uint64_t max_bytes = SafeUint64Arg(info, 4, "maxBytes");
  if (max_bytes > kPrecopyMaxBytes) ThrowArg(info.Env(), "maxBytes", "at most " + std::to_string(kPrecopyMaxBytes));
  job->config.runs = RunsArg(info, 1, max_bytes);
  job->config.out_fd = Int32Arg(info, 2, "outFd");
  job->config.cancel_fd = Int32Arg(info, 3, "cancelFd");
  return StartThreadJob(info.Env(), job, "precopyRead", "ferry-precopy");
}

// Synchronous: ~14 ms for 262144 pages (a 1 GiB pre-copy), ~300 ms for 4M, measured on a 2-core
// VM; under the 50 ms where an AsyncWorker (and a Promise for the caller) would be worth it.
Napi::Value BuildPageIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) ThrowArg(env, "hashes", "an array of Uint8Arrays");
  Napi::Array array = info[0].As<Napi::Array>();
  if (array.Length() > kPageIndexMaxFiles) ThrowArg(env, "hashes", "at most " + std::to_string(kPageIndexMaxFiles) + " files");
  std::vector<PageIndex::FileHashes> files;
  for (uint32_t f = 0; f < array.Length(); ++f) {
    Napi::Uint8Array hashes = BytesArg(env, array.Get(f), "hashes");
    if (hashes.ByteLength() % kPageHashBytes != 0 || hashes.ByteLength() / kPageHashBytes > kPageIndexMaxFilePages) {
      ThrowArg(env, "hashes", "16 bytes a page, at most 2^31 pages per file; file " + std::to_string(f) + " is not");
    }
    files.push_back(PageIndex::FileHashes{hashes.Data(), hashes.ByteLength()});
  }
  auto* ref = new IndexRef(std::make_shared<const PageIndex>(files));
  int64_t memory = static_cast<int64_t>((*ref)->MemoryBytes());
  // Tell V8 what the small External holds, so the GC collects an old index before memory runs out.
  Napi::MemoryManagement::AdjustExternalMemory(env, memory);
  auto external = Napi::External<IndexRef>::New(env, ref, [memory](Napi::Env finalizing, IndexRef* owned) {
    Napi::MemoryManagement::AdjustExternalMemory(finalizing, -memory);
    // A dedup thread still using the index keeps it alive through its own reference.
    delete owned;
  });
  external.TypeTag(&kPageIndexTag);
  return external;
}

class DedupJob : public OutcomeJob<DedupConfig, DedupOutcome, RunDedupPages> {
 public:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object counts = Napi::Object::New(env);
    counts.Set("bytesIn", Napi::Number::New(env, static_cast<double>(outcome_.bytes_in)));
    counts.Set("bytesOut", Napi::Number::New(env, static_cast<double>(outcome_.bytes_out)));
    counts.Set("literalPages", Napi::Number::New(env, static_cast<double>(outcome_.literal_pages)));
    counts.Set("refPages", Napi::Number::New(env, static_cast<double>(outcome_.ref_pages)));
    return counts;
  }
};

Napi::Value DedupPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal() || !info[0].As<Napi::External<IndexRef>>().CheckTypeTag(&kPageIndexTag)) {
    ThrowArg(env, "index", "a page index from buildPageIndex");
  }
  auto job = std::make_shared<DedupJob>();
  job->config.index = *info[0].As<Napi::External<IndexRef>>().Data();
  job->config.in_fd = Int32Arg(info, 1, "inFd");
  job->config.out_fd = Int32Arg(info, 2, "outFd");
  job->config.cancel_fd = Int32Arg(info, 3, "cancelFd");
  return StartThreadJob(env, job, "dedupPages", "ferry-dedup");
}

/** Whether `run` starts after `prev` ends, in (task, vaddr) order: a runs table's order (lazyServe's, pageRelay's). */
template <typename Run>
bool ComesAfter(const Run& prev, const Run& run) {
  return prev.task < run.task || (prev.task == run.task && prev.vaddr + prev.pages * kPageBytes <= run.vaddr);
}

/** (task, vaddr, pages, file, offset) u64 records, re-checked: sorted, not overlapping, in range. */
std::vector<LazyServeRun> LazyRunsArg(const Napi::CallbackInfo& info, size_t index, size_t files) {
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = BytesArg(env, info[index], "runs");
  if (bytes.ByteLength() % 40 != 0 || bytes.ByteLength() / 40 > kLazyServeMaxRuns) {
    ThrowArg(env, "runs", "(task, vaddr, pages, file, offset) u64 records, at most " + std::to_string(kLazyServeMaxRuns));
  }
  std::vector<LazyServeRun> runs(bytes.ByteLength() / 40);
  for (size_t i = 0; i < runs.size(); ++i) {
    const uint8_t* at = bytes.Data() + i * 40;
    LazyServeRun& run = runs[i];
    run = {LoadLe64(at), LoadLe64(at + 8), LoadLe64(at + 16), LoadLe64(at + 24), LoadLe64(at + 32)};
    constexpr uint64_t kMaxPages = uint64_t{1} << 40;
    if (run.vaddr % kPageBytes != 0 || run.pages == 0 || run.pages > kMaxPages || run.file >= files ||
        run.vaddr > std::numeric_limits<uint64_t>::max() - run.pages * kPageBytes ||
        run.offset > std::numeric_limits<uint64_t>::max() - run.pages * kPageBytes) {
      ThrowArg(env, "runs", "page-aligned runs of 1 .. 2^40 pages in a given file, run " + std::to_string(i) + " is not");
    }
    if (i > 0 && !ComesAfter(runs[i - 1], run)) ThrowArg(env, "runs", "sorted by (task, vaddr) and not overlapping, run " + std::to_string(i) + " is not");
  }
  return runs;
}

class LazyServeJob : public OutcomeJob<LazyServeConfig, LazyServeOutcome, RunLazyServe> {
 public:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("requests", Napi::Number::New(env, static_cast<double>(outcome_.requests)));
    result.Set("pages", Napi::Number::New(env, static_cast<double>(outcome_.pages)));
    return result;
  }
};

Napi::Value LazyServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<LazyServeJob>();
  job->config.sock_fd = Int32Arg(info, 0, "sockFd");
  if (info.Length() < 3 || !info[2].IsArray()) ThrowArg(env, "files", "an array of descriptors");
  Napi::Array files = info[2].As<Napi::Array>();
  if (files.Length() > kLazyServeMaxFiles) ThrowArg(env, "files", "at most " + std::to_string(kLazyServeMaxFiles));
  for (uint32_t f = 0; f < files.Length(); ++f) {
    Napi::Value fd = files.Get(f);
    if (!fd.IsNumber() || fd.As<Napi::Number>().Int32Value() < 0) ThrowArg(env, "files", "descriptors (integers >= 0)");
    job->config.files.push_back(fd.As<Napi::Number>().Int32Value());
  }
  job->config.runs = LazyRunsArg(info, 1, job->config.files.size());
  job->config.cancel_fd = Int32Arg(info, 3, "cancelFd");
  job->config.protocol = {Uint32Arg(info, 4, "cmdMask"), Uint32Arg(info, 5, "getCmd"), Uint32Arg(info, 6, "replyCmd"), Uint32Arg(info, 7, "closeCmd"),
                          Uint32Arg(info, 8, "forceCloseCmd")};
  return StartThreadJob(env, job, "lazyServe", "ferry-lazyserve");
}

/** (task, vaddr, pages) u64 records, re-checked: sorted, not overlapping, at most kPageRelayMaxPages in all. */
std::vector<PageRelayRun> RelayRunsArg(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = BytesArg(env, info[index], "runs");
  if (bytes.ByteLength() % 24 != 0 || bytes.ByteLength() / 24 > kPageRelayMaxRuns) {
    ThrowArg(env, "runs", "(task, vaddr, pages) u64 records, at most " + std::to_string(kPageRelayMaxRuns));
  }
  std::vector<PageRelayRun> runs(bytes.ByteLength() / 24);
  uint64_t total = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const uint8_t* at = bytes.Data() + i * 24;
    PageRelayRun& run = runs[i];
    run = {LoadLe64(at), LoadLe64(at + 8), LoadLe64(at + 16)};
    if (run.vaddr % kPageBytes != 0 || run.pages == 0 || run.pages > kPageRelayMaxPages - total ||
        run.vaddr > std::numeric_limits<uint64_t>::max() - run.pages * kPageBytes) {
      ThrowArg(env, "runs", "page-aligned runs of at least a page, " + std::to_string(kPageRelayMaxPages) + " pages in all, run " + std::to_string(i) + " is not");
    }
    total += run.pages;
    if (i > 0 && !ComesAfter(runs[i - 1], run)) ThrowArg(env, "runs", "sorted by (task, vaddr) and not overlapping, run " + std::to_string(i) + " is not");
  }
  return runs;
}

class PageRelayJob : public OutcomeJob<PageRelayConfig, PageRelayOutcome, RunPageRelay> {
 public:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("requests", Napi::Number::New(env, static_cast<double>(outcome_.requests)));
    result.Set("hits", Napi::Number::New(env, static_cast<double>(outcome_.hits)));
    result.Set("pages", Napi::Number::New(env, static_cast<double>(outcome_.pages)));
    result.Set("prefetchedPages", Napi::Number::New(env, static_cast<double>(outcome_.prefetched_pages)));
    result.Set("unusedPages", Napi::Number::New(env, static_cast<double>(outcome_.unused_pages)));
    return result;
  }
};

Napi::Value PageRelay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<PageRelayJob>();
  job->config.daemon_fd = Int32Arg(info, 0, "daemonFd");
  job->config.upstream_fd = Int32Arg(info, 1, "upstreamFd");
  job->config.runs = RelayRunsArg(info, 2);
  job->config.cancel_fd = Int32Arg(info, 3, "cancelFd");
  job->config.protocol = {Uint32Arg(info, 4, "cmdMask"), Uint32Arg(info, 5, "getCmd"), Uint32Arg(info, 6, "replyCmd"), Uint32Arg(info, 7, "closeCmd"),
                          Uint32Arg(info, 8, "forceCloseCmd")};
  job->config.chunk_pages = Uint32Arg(info, 9, "chunkPages", 1, 1024);
  job->config.window = Uint32Arg(info, 10, "window", 0, 64);
  job->config.cache_bytes = SafeUint64Arg(info, 11, "cacheBytes");
  if (job->config.cache_bytes > (uint64_t{1} << 30)) ThrowArg(env, "cacheBytes", "at most 1 GiB");
  job->config.wait_for_background = BoolArg(info, 12, "waitForBackground");
  return StartThreadJob(env, job, "pageRelay", "ferry-pagerelay");
}

}  // namespace

void InitPageDelta(Napi::Env env, Napi::Object exports) {
  exports.Set("lazyServe", Napi::Function::New(env, LazyServe, "lazyServe"));
  exports.Set("pageRelay", Napi::Function::New(env, PageRelay, "pageRelay"));
  exports.Set("precopyRead", Napi::Function::New(env, PrecopyRead, "precopyRead"));
  exports.Set("buildPageIndex", Napi::Function::New(env, BuildPageIndex, "buildPageIndex"));
  exports.Set("dedupPages", Napi::Function::New(env, DedupPages, "dedupPages"));
}

}  // namespace ferry
