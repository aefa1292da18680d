"""``python -m gbair_nb …``: see :mod:`gbair_nb.cli`."""
from .cli import main

raise SystemExit(main())
