"""Fitting scaling laws to sweep results: loading, laws, approaches 1-3, bootstrap, prediction, report.

Entry points: `scaling fit`, `scaling predict`, `scaling report` (see `cli.py` and docs/fit.md). Modules
that need JAX or matplotlib import them lazily, so `scaling predict` stays fast.
"""
