#!/usr/bin/env bash
# Set up katacr on a fresh Debian/Ubuntu machine, then run the main job:
# the end-to-end suite, local profile.  --no-run stops after the setup.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    qemu-system-x86 qemu-utils        # the local profile's VMs
    debootstrap e2fsprogs             # guest rootfs and VM image
    build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils
    binutils                          # guest kernel build
    busybox-static                    # the workload image
    containerd runc                   # workload image test, kata profile
    python3 python3-venv
)
KERNEL_SOURCE=linux-source-6.1

run_main_job=1
[ "${1:-}" = "--no-run" ] && run_main_job=0

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local pkgs=("${APT_PACKAGES[@]}")
    as_root apt-get update -q
    if apt-cache show "$KERNEL_SOURCE" >/dev/null 2>&1; then
        pkgs+=("$KERNEL_SOURCE")
    else
        echo "setup: $KERNEL_SOURCE is not in this distribution's archive;"
        echo "setup: set kernel.source to a 6.x kernel tarball or tree"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${pkgs[@]}"
}

install_python_env() {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e .
}

install_packages
install_python_env
echo "setup: done; tests: .venv/bin/pytest"
if [ "$run_main_job" -eq 1 ]; then
    # The e2e suite needs root (debootstrap, VMs); sudo keeps HOME's cache.
    as_root .venv/bin/pytest tests/e2e
fi
