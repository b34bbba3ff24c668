"""Monitoring: passive Icinga results, plugin checks, metrics, status."""
