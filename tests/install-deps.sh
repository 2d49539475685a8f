#!/usr/bin/env bash
# Installs the real peers the integration tests drive, from Debian (bookworm)
# packages, when they are missing: Kamailio (the cloud) with its sqlite,
# presence, xml and utils modules, SIPp (package sip-tester) and baresip (the
# phones), sqlite3 (the rig provisions Kamailio's database with it).
# Idempotent and quiet; does nothing but a dpkg query when all are present.
# Runs as root (CI) or through sudo.
set -euo pipefail

PKGS=(
  kamailio
  kamailio-sqlite-modules
  kamailio-presence-modules
  kamailio-xml-modules
  kamailio-utils-modules
  sip-tester
  baresip-core
  sqlite3
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The tests start their own Kamailio processes; keep the package's own
  # service from starting during the install (policy-rc.d "101: not allowed").
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  log=$(mktemp)
  status=0
  {
    "${SUDO[@]}" apt-get update -qq &&
      "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
  } >"$log" 2>&1 || status=$?
  if [ "$made_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then
    cat "$log" >&2
    rm -f "$log"
    echo "install-deps: apt-get failed ($status)" >&2
    exit "$status"
  fi
  rm -f "$log"
fi

# Never the Debian kamailio service: it would hold port 5060 on the host's
# addresses with the stock config. Stop and disable it if it is there.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  if systemctl is-enabled --quiet kamailio.service 2>/dev/null ||
    systemctl is-active --quiet kamailio.service 2>/dev/null; then
    "${SUDO[@]}" systemctl disable --now kamailio.service >/dev/null 2>&1 || true
  fi
elif [ -x /etc/init.d/kamailio ] && [ -e /run/kamailio/kamailio.pid ]; then
  "${SUDO[@]}" /etc/init.d/kamailio stop >/dev/null 2>&1 || true
fi

for tool in kamailio kamcmd sipp sqlite3 baresip; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1; then
    echo "install-deps: $tool still missing after install" >&2
    exit 1
  fi
done
