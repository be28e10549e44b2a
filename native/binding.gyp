{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "src/addon.cc",
        "src/syscall-error.cc",
        "src/args.cc",
        "src/mount.cc",
        "src/pidfd.cc",
        "src/files.cc",
        "src/sockets.cc",
        "src/fd-io.cc",
        "src/sealed-pump.cc",
        "src/pump.cc",
        "src/aead.cc",
        "src/thread-job.cc",
        "src/page-hash.cc",
        "src/page-index.cc",
        "src/precopy-read.cc",
        "src/page-delta.cc",
        "src/page-delta-binding.cc",
        "src/lazy-serve.cc",
        "src/page-relay.cc"
      ],
      # OpenSSL (sealed-pump.cc): headers from <nodedir>/include/node/openssl, which node-gyp puts on
      # the include path ahead of /usr/include; symbols from the node binary, which links OpenSSL
      # statically and exports it to addons. So no libssl-dev and no -lcrypto here.
      # xxHash (page-hash.cc): build dependency only, Debian's libxxhash-dev (>= 0.8.0, for XXH3-128;
      # /usr/include/xxhash.h). Compiled in with XXH_INLINE_ALL, so no -lxxhash and nothing new at run time.
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"]
    }
  ]
}
