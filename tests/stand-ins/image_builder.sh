#!/usr/bin/env python3
"""Stand-in for osbuilder's image_builder.sh: writes the -o image."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _standin import failure, option, record, write  # noqa: E402

argv = record("image_builder.sh")
status = failure("image_builder.sh", "build")
if status:
    sys.exit(status)
write(option(argv, "-o"), "image")
