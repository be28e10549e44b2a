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
        "src/sockets.cc"
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"]
    }
  ]
}
