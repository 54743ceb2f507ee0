#!/usr/bin/env bash
# Apt's caches stay out of the image. Generalising it (host keys, authorized keys, machine id,
# cloud-init state, the bake's passwordless sudo) is fleet's own last step, run after every recipe's
# steps whatever they are (fleet/images/finish.py): a step must not remove the bake's sudo itself.
source "$(dirname "$0")/lib.sh"
as_root apt-get clean
as_root rm -rf /var/lib/apt/lists/*
