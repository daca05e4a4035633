{
  "targets": [
    {
      "target_name": "vmlink_native",
      "sources": [
        "src/native/c/addon.c",
        "src/native/c/csum.c",
        "src/native/c/file.c",
        "src/native/c/io.c",
        "src/native/c/mem.c",
        "src/native/c/packet.c",
        "src/native/c/poll.c",
        "src/native/c/tap.c",
        "src/native/c/udp.c",
        "src/native/c/udp-batch.c",
        "src/native/c/unix.c",
        "src/native/c/unix-fds.c",
        "src/native/c/guard.c",
        "src/native/c/vring-core.c",
        "src/native/c/vring.c"
      ],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
