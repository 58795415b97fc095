"""``python -m anncat ARGS``: runs the ``anncat`` command with ARGS."""

import subprocess
import sys

from . import binary

if __name__ == "__main__":
    sys.exit(subprocess.call([binary(), *sys.argv[1:]]))
