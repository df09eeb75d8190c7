"""``python -m service`` is the ``tokenward`` command."""

from .cli import main

raise SystemExit(main())
