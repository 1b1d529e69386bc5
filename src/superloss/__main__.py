"""``python -m superloss``: the benchmark command line."""

from superloss.bench.cli import main

raise SystemExit(main())
