"""``python -m nfhep ...`` is the same as the ``nfhep`` command."""

from nfhep.cli import main

raise SystemExit(main())
