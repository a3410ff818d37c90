"""Benchmark: moving a checkpoint out of a guest, 9p share vs guest agent.

Boots one local-profile VM from the cached artifacts, writes a file of
``--mib`` MiB in the guest's tmpfs, then copies it to the host twice:
through the 9p share (what the harness uses) and through the guest
agent's captured output (base64 over virtio-serial).  Prints each rate
and their ratio.  Run as root after one e2e run has filled the cache:

    .venv/bin/python -m benchmarks.channels --mib 4

The agent's answer is base64 in one JSON message, which qemu.qmp reads
into a 10 MB buffer: keep ``--mib`` at 7 or less.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from katacr import config
from katacr.builders.image import build_image
from katacr.builders.kernel import build_kernel
from katacr.builders.rootfs import build_rootfs
from katacr.cache import Cache
from katacr.platforms.qemu import QemuVM, VmSpec

SRC = "/tmp/bench.bin"


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load()
    cache = Cache(cfg.cache_path)
    work = Path(tempfile.mkdtemp(prefix="katacr-bench-"))
    try:
        measure(cfg, cache, work, args.mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(cfg: config.Config, cache: Cache, work: Path, mib: int) -> None:
    kernel = build_kernel(cfg, cache, work)
    image = build_image(cfg, cache, build_rootfs(cfg, cache, work), work)
    share = work / "share"
    share.mkdir()
    spec = VmSpec("katacr-bench", kernel.path / "vmlinux",
                  image.path / "rootfs.img", memory_mb=1024,
                  share_dir=share)
    with QemuVM(spec, work, cfg.vm.qemu) as vm:
        vm.start()
        vm.wait_ready(cfg.vm.boot_timeout)
        guest = vm.guest
        guest.run(["dd", "if=/dev/urandom", f"of={SRC}", "bs=1M",
                   f"count={mib}"], stage="bench", timeout=300)
        share_s = timed(lambda: guest.run(
            ["cp", SRC, "/mnt/katacr/out.bin"], stage="bench", timeout=600))
        agent_s = timed(lambda: guest.run(["cat", SRC], stage="bench",
                                          timeout=600))
    assert (share / "out.bin").stat().st_size == mib << 20
    print(f"9p share:    {mib / share_s:8.1f} MiB/s")
    print(f"guest agent: {mib / agent_s:8.1f} MiB/s")
    print(f"ratio share/agent: {agent_s / share_s:.1f}x")


if __name__ == "__main__":
    main()
