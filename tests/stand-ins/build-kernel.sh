#!/usr/bin/env python3
"""Stand-in for kata's build-kernel.sh: setup makes kata-linux-VER-1/
(its .config from -c, or a small Kata-like base), install writes
DESTDIR/PREFIX/share/kata-containers/vmlinux.container."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _standin import failure, option, record, write  # noqa: E402

argv = record("build-kernel.sh")
command = argv[-1]
version = option(argv, "-v") or "6.1.62"
kdir = os.path.join(os.getcwd(), f"kata-linux-{version}-135")
status = failure("build-kernel.sh", command)
if status:
    print(f"ERROR: {command} failed (stand-in)", file=sys.stderr)
    sys.exit(status)
if command == "setup":
    config = option(argv, "-c")
    text = open(config).read() if config else \
        "CONFIG_VIRTIO=y\n# CONFIG_CHECKPOINT_RESTORE is not set\n"
    write(os.path.join(kdir, ".config"), text)
    write(os.path.join(kdir, "Makefile"), "olddefconfig:\n\t@true\n")
elif command == "build":
    drop = os.environ.get("KATACR_STANDIN_DROP")
    if drop:
        path = os.path.join(kdir, ".config")
        lines = [ln for ln in open(path).read().splitlines()
                 if not ln.startswith(drop + "=")]
        write(path, "\n".join(lines) + "\n")
elif command == "install":
    dest = os.environ.get("DESTDIR", "/")
    prefix = os.environ.get("PREFIX", "/usr").lstrip("/")
    write(os.path.join(dest, prefix, "share/kata-containers/"
                       "vmlinux.container"), "vmlinux")
