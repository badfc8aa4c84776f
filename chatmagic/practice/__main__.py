"""``python -m chatmagic.practice``: the practice server (same flags as ``python -m chatmagic.practice.server``)."""

from chatmagic.practice.server import main

main()
