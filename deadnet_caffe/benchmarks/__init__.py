"""Benchmarks run by ``deadnet bench`` / ``make bench``: one module each.

Each module defines ``NAME`` and ``run(out_dir: Path, quick: bool) -> dict``. A benchmark
measures its baseline in the same run and reports ratios against it (``*_ratio`` keys),
so the figures mean the same on any machine; absolute seconds are printed for context only.
"""
