"""Benchmarks: each prints its figures as ratios to a baseline run in the same process."""
