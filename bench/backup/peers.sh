#!/usr/bin/env bash
# walship measured exactly as ../shared/bench/peers measures pgBackRest and barman-cloud:
# the same source cluster ($PEERS/pgdata, pgbench -s 100), the same helpers of lib.sh
# (measure: /usr/bin/time -v as postgres, warm page cache before a backup, sync before a
# restore; restore_verify: start the restored cluster, wait for recovery end, count(*) =
# 10,000,000), into the same results file, so that 90_report.py prints walship's rows
# beside the peers'. Run the peer scripts in the same session (this machine is noisy).
#
#   bench/backup/peers.sh                      # from the repository root, as root, after scripts/setup
#   RUNS=2 REPOS="file s3" CODECS="zstd lz4" RESULTS=/tmp/peers/side-by-side.jsonl bench/backup/peers.sh
#
# S3 is moto over plain http on 127.0.0.1 (as barman-cloud is measured); pgBackRest, which only
# speaks https, goes through an nginx TLS proxy in front of moto (see the peers' lib.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEER_DIR=$(cd "$ROOT/../shared/bench/peers" && pwd)
source "$PEER_DIR/lib.sh"
RUNS=${RUNS:-2}; REPOS=${REPOS:-"file s3"}; CODECS=${CODECS:-"zstd lz4"}
WALSHIP=${WALSHIP_VENV:-/opt/walship/venv}/bin/walship
VER=$("$WALSHIP" --version | awk '{print $NF}')
[ -f "$PGDATA/PG_VERSION" ] || { echo "no cluster in $PGDATA: run $PEER_DIR/01_cluster.sh first" >&2; exit 1; }

pg_up
export DB_BYTES; DB_BYTES=$(db_bytes)
for repo in $REPOS; do
  if [ "$repo" = s3 ]; then
    moto_up plain; export MOTO=plain
    s3mb "http://127.0.0.1:$MOTO_PORT" walship
  else
    export MOTO=none
  fi
  for codec in $CODECS; do
    if [ "$repo" = s3 ]; then
      label="S3 moto (http) $codec"
      repo_env="WALSHIP_REPO=s3://walship/$codec-$$ WALSHIP_S3_ENDPOINT=http://127.0.0.1:$MOTO_PORT AWS_REGION=us-east-1"
    else
      label="posix $codec"
      dir=$PEERS/repo/walship-$codec; rm -rf "$dir"; mkdir -p "$dir"; chown postgres "$dir"
      repo_env="WALSHIP_REPO=file://$dir"
    fi
    repo_env="$repo_env WALSHIP_COMPRESSION=$codec"
    # the restored server's restore_command (walship wal-fetch) reads the repository settings from here
    for kv in $repo_env; do export "${kv?}"; done
    set_archive_command "env $repo_env $WALSHIP wal-push %p"
    wait_archiver_idle 120 >/dev/null
    for r in $(seq "$RUNS"); do
      warm_cache
      measure walship "$VER" "full backup" "$label" "$r" "backup_concurrency=2 (default)" -- \
        "env $repo_env $WALSHIP backup-push $PGDATA --progress none"
      stored=$(runuser -u postgres -- env $repo_env "$WALSHIP" backup-list --json |
               "${WALSHIP%/walship}/python" -c 'import json, sys; print(json.load(sys.stdin)[-1]["stored_size"])')
      fix_last stored_bytes="$stored"
    done
    for r in $(seq "$RUNS"); do
      D=$PEERS/restore/walship-$codec; rm -rf "$D"; mkdir -p "$D"; chown postgres "$D"; chmod 700 "$D"
      settle
      measure walship "$VER" "full restore (fetch)" "$label" "$r" "latest backup into empty dir" -- \
        "env $repo_env $WALSHIP backup-fetch $D LATEST --progress none"
      fix_last stored_bytes="$(du -sb "$D" | cut -f1)"
      restore_verify walship "$VER" "$label" "$r" "$D"
      rm -rf "$D"
    done
    wait_archiver_idle 120 >/dev/null
    for kv in $repo_env; do unset "${kv%%=*}"; done
  done
  if [ "$repo" = s3 ]; then
    echo "moto RSS now: $(proc_rss_mb "$(moto_pid plain)") MiB (peak $(proc_hwm_mb "$(moto_pid plain)") MiB)"
    moto_down plain
  fi
done
set_archive_command "/bin/true"
