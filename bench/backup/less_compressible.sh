#!/usr/bin/env bash
# A second source cluster for the peers' scripts and bench/backup/peers.sh, of the same size
# and row count as theirs (pgbench -s 100: restore_verify's count(*) = 10,000,000 holds) but
# far less compressible: pgbench_accounts.filler (84 of a row's ~120 bytes, blanks in pgbench)
# becomes random hex, which zstd and lz4 shrink about 2x instead of 8-16x.
#
#   bench/backup/less_compressible.sh          # as root; builds $PEERS (default /tmp/peers-rand)
#   PEERS=/tmp/peers-rand RUNS=2 VARIANTS="lz4pm2 zstpm2" bash ../shared/bench/peers/10_pgbackrest_posix.sh
#   PEERS=/tmp/peers-rand bench/backup/peers.sh
#
# The peers' scripts all use port 5433: stop the other source cluster first
# (runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/peers/pgdata stop).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEER_DIR=$(cd "$ROOT/../shared/bench/peers" && pwd)
export PEERS=${PEERS:-/tmp/peers-rand}
BASE=${BASE_PEERS:-/tmp/peers}
mkdir -p "$PEERS"
# the tool venvs 00_setup.sh installed for the first cluster serve this one too
[ -e "$PEERS/venv" ] || ln -s "$BASE/venv" "$PEERS/venv"
[ -d "$BASE/venv" ] || { echo "run $PEER_DIR/00_setup.sh first" >&2; exit 1; }
bash "$PEER_DIR/01_cluster.sh"
source "$PEER_DIR/lib.sh"
pg_up
if [ "$(psqlc "SELECT count(*) FROM (SELECT FROM pgbench_accounts WHERE filler = '' LIMIT 1) blank")" != 0 ]; then
  log "filling pgbench_accounts.filler with random hex"
  psqlc "UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text) || left(md5(random()::text), 20)" >/dev/null
  psqlc "VACUUM FULL pgbench_accounts" >/dev/null
  psqlc "CHECKPOINT" >/dev/null
fi
echo "db bytes (PGDATA w/o pg_wal): $(db_bytes)" | tee -a "$PEERS/cluster-info.txt"
echo "zstd -1 ratio of pgbench_accounts: $(cat "$PGDATA"/base/5/"$(psqlc "SELECT relfilenode FROM pg_class WHERE relname = 'pgbench_accounts'")"* |
  zstd -1 -c | wc -c | awk -v t="$(du -cb "$PGDATA"/base/5/"$(psqlc "SELECT relfilenode FROM pg_class WHERE relname = 'pgbench_accounts'")"* | tail -1 | cut -f1)" '{printf "%.2f", t/$1}')" |
  tee -a "$PEERS/cluster-info.txt"
