#!/usr/bin/env bash
# NVIDIA driver and CUDA toolkit from NVIDIA's apt repository, pinned to the recipe's versions.
source "$(dirname "$0")/lib.sh"   # from images/common/scripts/: the bake uploads both into one tree
require_version nvidia.driver "$FLEET_NVIDIA_DRIVER"
require_version nvidia.cuda "$FLEET_CUDA_VERSION"
require_cmd apt-get
driver_major="${FLEET_NVIDIA_DRIVER%%.*}"
cuda_mm="$(echo "$FLEET_CUDA_VERSION" | cut -d. -f1-2 | tr . -)"      # 12.4.1 -> 12-4
distro="$(. /etc/os-release && echo "${ID}${VERSION_ID}" | tr -d .)"   # ubuntu2204
arch="$(uname -m)"
keyring="https://developer.download.nvidia.com/compute/cuda/repos/${distro}/${arch}/cuda-keyring_1.1-1_all.deb"
say "driver ${driver_major} (${FLEET_NVIDIA_DRIVER}), cuda ${FLEET_CUDA_VERSION}, repo ${distro}/${arch}"
export DEBIAN_FRONTEND=noninteractive
run curl -fsSL -o /tmp/cuda-keyring.deb "$keyring"
as_root dpkg -i /tmp/cuda-keyring.deb
as_root rm -f /tmp/cuda-keyring.deb   # installed; the image must not carry the download
as_root apt-get update -q
as_root apt-get install -y -q "cuda-drivers-${driver_major}" "cuda-toolkit-${cuda_mm}"
write_root_file /etc/profile.d/cuda.sh 0644 <<PROFILE
export PATH=/usr/local/cuda/bin:\$PATH
export LD_LIBRARY_PATH=/usr/local/cuda/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
PROFILE
# Persistence mode keeps the driver loaded between jobs (faster first CUDA call on every run).
as_root systemctl enable nvidia-persistenced
