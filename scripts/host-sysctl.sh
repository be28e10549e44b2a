#!/usr/bin/env bash
# Kernel settings a ferry host needs, applied now and kept across reboots (/etc/sysctl.d).
#
# fs.pipe-max-size >= 4 MiB: `criu dump --lazy-pages` (post-copy without writing the memory) copies
# pages out of its page pipes through a 4 MiB pipe. Root without CAP_SYS_RESOURCE (some VMs and
# containers) may not make a pipe larger than this limit (default 1 MiB), and CRIU's first page
# request then fails ("page-pipe: tee: 65536: Operation not permitted"). The agent's probe reports
# `lazyDump` only when the limit allows it; without it post-copy rewrites a full dump instead.
set -euo pipefail
want=4194304
conf=/etc/sysctl.d/60-ferry.conf
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt "$want" ]; then
  echo "ferry: raising fs.pipe-max-size to $want (CRIU's lazy dump)"
  echo "$want" > /proc/sys/fs/pipe-max-size
fi
if [ -d /etc/sysctl.d ] && ! grep -qs "fs.pipe-max-size = $want" "$conf"; then
  printf '# ferry: CRIU lazy dump (scripts/host-sysctl.sh)\nfs.pipe-max-size = %s\n' "$want" > "$conf"
fi
