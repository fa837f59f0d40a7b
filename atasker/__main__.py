"""``python -m atasker``: the same as the ``atasker`` command."""

from atasker.tools.cli import main

raise SystemExit(main())
