"""Everything that knows PostgreSQL: WAL names and LSNs, connections, the backup API, control data."""
