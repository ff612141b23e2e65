"""``python -m cvae_seg.cli``: the same as the ``cvae-seg`` command."""

from cvae_seg.cli import main

raise SystemExit(main())
