#!/usr/bin/env python3
"""Stand-in for osbuilder's rootfs.sh: a tree with /sbin/init and the
agent at $ROOTFS_DIR; records the environment it was given."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _standin import failure, record, write  # noqa: E402

argv = record("rootfs.sh")
env = {k: os.environ.get(k) for k in ("USE_DOCKER", "OS_VERSION",
                                      "AGENT_SOURCE_BIN", "ROOTFS_DIR",
                                      "DOCKER_HOST")}
record_env = os.environ.get("KATACR_STANDIN_LOG")
if record_env:
    with open(record_env, "a") as f:
        f.write(json.dumps(["rootfs.sh-env", env]) + "\n")
status = failure("rootfs.sh", argv[0] if argv else "")
if status:
    sys.exit(status)
root = os.environ["ROOTFS_DIR"]
write(os.path.join(root, "sbin/init"), "#!/bin/sh\n")
write(os.path.join(root, "usr/bin/kata-agent"), "agent\n")
