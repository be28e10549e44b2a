#!/usr/bin/env bash
# Installs the system parts ferry needs on a Debian 12 machine. Idempotent: does nothing when all is present.
# CRIU comes from Debian 13 (trixie) because Debian 12's CRIU 3.17 fails on current kernels
# ("vdso: Unexpected rt vDSO area bounds"); the pin keeps every other package on bookworm.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "ferry: the set-up must run as root (it installs packages and creates network namespaces)." >&2
  exit 1
fi

need=()
command -v criu >/dev/null 2>&1 && criu --version 2>/dev/null | grep -qE 'Version: [4-9]' || need+=(criu)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sshfs >/dev/null 2>&1 || need+=(sshfs)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# Per-migration certificates for the page server's TLS, and the dev cluster's NATS TLS CA.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The dashboard's tests drive it in headless Chromium (playwright-core with executablePath /usr/bin/chromium).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "ferry: installing system packages: ${need[*]}"

pin=/etc/apt/preferences.d/ferry-trixie
if [ ! -f "$pin" ]; then
  cat >"$pin" <<'PIN'
# Written by ferry's set-up: Debian 13 packages only when asked for (-t trixie), never by default.
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
fi
src=/etc/apt/sources.list.d/ferry-trixie.sources
if [ ! -f "$src" ]; then
  cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
# Third-party lists on the image may be unreachable here; their failure must not stop the set-up.
apt-get update -o Acquire::Retries=2 || true
others=()
for p in "${need[@]}"; do [ "$p" = criu ] || others+=("$p"); done
if [ ${#others[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${others[@]}"
fi
if printf '%s\n' "${need[@]}" | grep -qx criu; then
  apt-get install -y --no-install-recommends -t trixie criu
fi
# Debian starts these daemons on install; ferry runs its own instances, so stop the system ones.
for svc in redis-server nats-server ssh; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
criu --version
