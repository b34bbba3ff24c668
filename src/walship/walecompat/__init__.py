"""Compatibility with WAL-E: its environment, its commands, and the objects it stored."""
