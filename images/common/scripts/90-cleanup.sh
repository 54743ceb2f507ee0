#!/usr/bin/env bash
# Make the image generic: every instance must make its own SSH host key (fleet pins it per machine)
# and must not inherit the builder's authorized keys, machine id or apt caches.
source "$(dirname "$0")/lib.sh"
as_root apt-get clean
as_root rm -rf /var/lib/apt/lists/*
as_root find /etc/ssh -maxdepth 1 -name 'ssh_host_*' -delete
as_root truncate -s 0 /etc/machine-id
as_root find /home /root -maxdepth 3 -path '*/.ssh/authorized_keys' -delete
as_root cloud-init clean --logs
as_root rm -rf /home/fleet/work/.fleet /var/log/fleet-bootstrap.log
# Last: the bake's passwordless sudo (added by the builder's boot script) must not ship in the image.
as_root rm -f /etc/sudoers.d/90-fleet-bake
