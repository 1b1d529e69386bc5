"""Test collection: the toy plug-ins of tests/plugins/ register themselves when imported, so only
the tests that use them import them (test_recipes.py), never the doctest collector."""

collect_ignore = ["plugins"]
