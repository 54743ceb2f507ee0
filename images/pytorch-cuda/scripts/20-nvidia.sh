#!/usr/bin/env bash
# NVIDIA driver and CUDA toolkit from NVIDIA's apt repository, pinned to the recipe's exact versions:
# `cuda-drivers-550` alone would install whichever 550.x is newest on the day of the bake.
source "$(dirname "$0")/lib.sh"   # from images/common/scripts/: the bake uploads both into one tree
require_version nvidia.driver "$FLEET_NVIDIA_DRIVER"
require_version nvidia.cuda "$FLEET_CUDA_VERSION"
require_cmd apt-get
driver_major="${FLEET_NVIDIA_DRIVER%%.*}"
cuda_mm="$(echo "$FLEET_CUDA_VERSION" | cut -d. -f1-2 | tr . -)"      # 12.4.1 -> 12-4
# NVIDIA's repository names each package version <upstream>-1 (cuda-drivers-550 550.127.05-1)
driver_pkg="cuda-drivers-${driver_major}=${FLEET_NVIDIA_DRIVER}-1"
toolkit_pkg="cuda-toolkit-${cuda_mm}=${FLEET_CUDA_VERSION}-1"
distro="$(. /etc/os-release && echo "${ID}${VERSION_ID}" | tr -d .)"   # ubuntu2204
arch="$(uname -m)"
keyring="https://developer.download.nvidia.com/compute/cuda/repos/${distro}/${arch}/cuda-keyring_1.1-1_all.deb"
keyring_deb="${TMPDIR:-/tmp}/cuda-keyring.deb"
say "driver ${FLEET_NVIDIA_DRIVER}, cuda ${FLEET_CUDA_VERSION}, repo ${distro}/${arch}"
export DEBIAN_FRONTEND=noninteractive
run curl -fsSL -o "$keyring_deb" "$keyring"
# The keyring decides which repository apt trusts: install only the .deb the recipe pins.
want="${FLEET_NVIDIA_KEYRING_SHA256:-}"
if [ "$FLEET_BAKE_MODE" = check ]; then
  if [ -n "$want" ]; then say "would check sha256 of $keyring_deb is $want"
  else say "nvidia.keyring_sha256 is not set: a real bake refuses the keyring"; fi
else
  got="$(sha256sum "$keyring_deb" | cut -d' ' -f1)"
  if [ "$got" != "$want" ]; then
    rm -f "$keyring_deb"
    if [ -z "$want" ]; then
      echo "the recipe pins no nvidia.keyring_sha256; the downloaded $keyring has sha256 $got: check it, then set keyring_sha256 = \"$got\" under [nvidia]" >&2
    else
      echo "the downloaded $keyring has sha256 $got, the recipe pins $want: refusing to install it" >&2
    fi
    exit 4
  fi
fi
as_root dpkg -i "$keyring_deb"
as_root rm -f "$keyring_deb"   # installed; the image must not carry the download
as_root apt-get update -q
as_root apt-get install -y -q "$driver_pkg" "$toolkit_pkg"
write_root_file /etc/profile.d/cuda.sh 0644 <<PROFILE
export PATH=/usr/local/cuda/bin:\$PATH
export LD_LIBRARY_PATH=/usr/local/cuda/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
PROFILE
# Persistence mode keeps the driver loaded between jobs (faster first CUDA call on every run).
as_root systemctl enable nvidia-persistenced
