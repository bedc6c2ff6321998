"""Bullant's services: the shared runtime (core) and one package per domain."""
