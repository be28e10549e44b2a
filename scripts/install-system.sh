#!/usr/bin/env bash
# Installs the system parts ferry needs on a Debian 12 machine. Idempotent: does nothing when all is present.
# CRIU: Debian 12's 3.17 fails on current kernels ("vdso: Unexpected rt vDSO area bounds"), and
# Debian 13's 4.1.1 cannot dump any TCP or UDP socket on Linux >= 6.16 ("sockets: Can't get 1:16 opt:
# Operation not supported": the kernel restricted SO_PASSCRED/SO_PASSSEC to unix and netlink sockets;
# CRIU issues #2705/#2718, fixed in 4.2). So: trixie's criu first (it brings the trixie runtime
# it needs, libc 2.41 and libnftables1), then 4.2.1 from Debian unstable on top of it (four packages:
# criu, libcompel1, libnet9, libnl-3-200). Pins keep every other package on bookworm: trixie and
# unstable are used only when asked for with -t.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "ferry: the set-up must run as root (it installs packages and creates network namespaces)." >&2
  exit 1
fi

need=()
command -v criu >/dev/null 2>&1 && criu --version 2>/dev/null | grep -qE 'Version: (4\.([2-9]|[1-9][0-9])|[5-9]\.)' || need+=(criu)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sshfs >/dev/null 2>&1 || need+=(sshfs)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# test/own-root.test.ts runs ps inside a workload to see its own /proc.
command -v ps >/dev/null 2>&1 || need+=(procps)
# The native addon's page hashing for memory pre-copy (XXH3, header-only: needed to build it, not to run it).
[ -f /usr/include/xxhash.h ] || need+=(libxxhash-dev)
# Per-migration certificates for the page server's TLS, and the dev cluster's NATS TLS CA.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# TCP migration: nft drops CRIU's connection lock after a release or rollback; arping announces a moved service address.
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
# Local dirs (ferry run --local-dir) move as GNU tar archives; their tests check xattrs with attr's tools.
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v setfattr >/dev/null 2>&1 || need+=(attr)
# test/real-programs.test.ts compiles and migrates a small Java program (javac and java at test time).
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
# test/postgres.test.ts runs and migrates PostgreSQL as its own user (ferry run --user postgres): server, initdb and psql.
[ -x /usr/lib/postgresql/15/bin/postgres ] && command -v psql >/dev/null 2>&1 || need+=(postgresql-15 postgresql-client-15)
# test/nginx.test.ts runs and migrates nginx (master and www-data workers).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# The dashboard's tests drive it in headless Chromium (playwright-core with executablePath /usr/bin/chromium).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "ferry: installing system packages: ${need[*]}"

# add_suite SUITE PRIORITY WHAT: Debian's SUITE as an apt source, pinned below bookworm's 500 so its
# packages come only when asked for with -t SUITE. Files already there are left as they are.
add_suite() {
  local suite=$1 priority=$2 what=$3
  local pin=/etc/apt/preferences.d/ferry-$suite src=/etc/apt/sources.list.d/ferry-$suite.sources
  [ -f "$pin" ] || printf '# Written by ferry'"'"'s set-up: %s packages only when asked for (-t %s), never by default.\nPackage: *\nPin: release n=%s\nPin-Priority: %s\n' \
    "$what" "$suite" "$suite" "$priority" >"$pin"
  [ -f "$src" ] || printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suite" >"$src"
}
add_suite trixie 100 'Debian 13'
add_suite sid 50 'Debian unstable (CRIU 4.2)'

export DEBIAN_FRONTEND=noninteractive
# Third-party lists on the image may be unreachable here; their failure must not stop the set-up.
apt-get update -o Acquire::Retries=2 || true
others=()
for p in "${need[@]}"; do [ "$p" = criu ] || [ "$p" = nftables ] || others+=("$p"); done
if [ ${#others[@]} -gt 0 ]; then
  # Packages with daemons (nginx, postgresql, redis) must not start them: ferry runs its own
  # instances, and on a machine without systemd nothing would stop them again. policy-rc.d says so
  # to Debian's maintainer scripts; one the image already has is left alone.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y --no-install-recommends "${others[@]}"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if printf '%s\n' "${need[@]}" | grep -qx criu; then
  apt-get install -y --no-install-recommends -t trixie criu
  apt-get install -y --no-install-recommends -t sid criu
fi
# After CRIU: its libnftables1 is trixie's, which bookworm's nft cannot use.
if printf '%s\n' "${need[@]}" | grep -qx nftables; then
  apt-get install -y --no-install-recommends -t trixie nftables
fi
# Debian starts these daemons on install; ferry runs its own instances, so stop the system ones.
for svc in redis-server nats-server ssh postgresql; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
criu --version
