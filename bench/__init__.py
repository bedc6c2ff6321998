"""Benchmarks of Bullant against the tools its users would otherwise pick (make bench)."""
