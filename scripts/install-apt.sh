#!/usr/bin/env bash
# Installs the Debian packages rackflow's demo fleet and tests need. Idempotent: does nothing when all
# are present. Needs root (CI and the dev machines run as root).
set -euo pipefail
PKGS=(
  libvirt-daemon-system libvirt-clients libvirt-dev libvirt-daemon-driver-qemu pkg-config gcc python3-dev
  slurmctld slurmd slurm-client munge slurmdbd mariadb-server
  redis-server
  openssh-server openssh-client
  qemu-system-x86 ipmitool iproute2
  sudo
  bubblewrap python3-venv
  chromium
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "rackflow: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "rackflow: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts the packaged daemons; rackflow runs its own copies on loopback, so stop the system ones.
for svc in libvirtd virtlogd slurmctld slurmd slurmdbd mariadb munge ssh redis-server; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
done
