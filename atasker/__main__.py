"""``python -m atasker``: the same as the ``atasker`` command."""

from .cli import main

raise SystemExit(main())
