"""``python -m llamaswap``: the ``llamaswap`` command (``check-config``, ``--version``)."""

import sys

from llamaswap.cli import main

sys.exit(main())
