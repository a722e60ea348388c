"""``python -m llamaswap.demo``: the demo model server."""

from llamaswap.demo.cli import main

main()
