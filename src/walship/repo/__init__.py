"""The repository: its key layout, its own record, the catalog of what it holds."""
