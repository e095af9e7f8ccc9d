"""Sweeps: gin specs (`spec`), their expansion into runs (`expand`), the sweep root on disk (`root`), claims,
workers and the local runner. docs/sweeps.md describes the whole; this package stays light to import.
"""
