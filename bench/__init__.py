"""Benchmarks of SynapseX Training: each a ratio against a baseline measured side by side.

`make bench` runs them all and writes BENCHMARKS.md; `python -m bench.<name> [--quick]` runs one.
"""
