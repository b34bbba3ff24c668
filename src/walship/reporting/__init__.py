"""How walship tells the operator's monitoring: Nagios-plugin results, passive results to Icinga 2 (its
API) or NSCA, and Prometheus textfile metrics. The commands below monitoring (wal-push, backup-push,
wal-receive) send their own results through it after their work; the checks in monitoring/ format theirs
with it. Reporting never changes a command's outcome: channels() logs a failed channel and goes on."""
