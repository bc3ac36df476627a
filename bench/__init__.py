"""Benchmarks of etl (``just bench``, ``just bench-fleet``); not part of the etl package."""
