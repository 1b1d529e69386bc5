"""``python -m superloss.bench``: the suite's command line, the same as the ``superloss`` command."""

from superloss.bench.cli import main

raise SystemExit(main())
