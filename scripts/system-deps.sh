#!/usr/bin/env bash
# Install the Debian packages Stockade needs, if any is missing. Needs root (CI runs as root).
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them as root: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# openssh-server is here for its sshd binary only (the sandbox runs one per instance, inside
# the instance's namespace): keep the package from starting or enabling the machine's own
# ssh service when it installs it here
ssh_new=0
for pkg in "${missing[@]}"; do [ "$pkg" = openssh-server ] && ssh_new=1; done
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ "$ssh_new" -eq 1 ] && [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
trap '[ "$own_policy" -eq 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "$ssh_new" -eq 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
