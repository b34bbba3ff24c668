#!/usr/bin/env bash
# bench/archive/run.sh -- WAL archiving speed of walship, side by side with the peers.
#
# 1. Per call: the 64 real 16 MiB segments captured by the peers' 01_cluster.sh are pushed
#    one archive_command call at a time (sh -c, as the archiver does), first with every
#    segment .ready (batching on: most calls take the fast path), then with push_batch=1
#    (every call is a cold call that reads, compresses and uploads). Prints each call's
#    time: fast path and cold path.
# 2. End to end: 60 s of pgbench TPC-B (-c 4 -j 2, synchronous_commit=off) on the peers'
#    1.5 GB cluster with archive_command = walship (file and S3 repository), sampling the
#    .ready backlog every second, then the same run for the peers through
#    ../shared/bench/peers/30_wal_e2e.sh (pgBackRest sync and async, barman-cloud).
# Everything runs on 127.0.0.1 under $PEERS (default /tmp/peers). Usage:
#   bench/archive/run.sh                 # all
#   PEER_CONFIGS="pgbr-async" DUR=60 bench/archive/run.sh
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEERDIR=$ROOT/../shared/bench/peers
export RESULTS=${RESULTS:-/tmp/peers/walship-archive-results.jsonl}
DUR=${DUR:-60}
PEER_CONFIGS=${PEER_CONFIGS:-"pgbr-gz pgbr-async pgbr-s3-async barman-gzip"}
VENV=$("$ROOT/scripts/setup" | tail -n 1)
WS=$VENV/bin/walship
bash "$PEERDIR/00_setup.sh" >/dev/null
bash "$PEERDIR/01_cluster.sh" >/dev/null
source "$PEERDIR/lib.sh"
set +e
rm -f "$RESULTS"
pg_up; moto_up plain
EP=http://127.0.0.1:$MOTO_PORT
s3mb "$EP" walship >/dev/null 2>&1
S3ENV="WALSHIP_S3_ENDPOINT=$EP AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"

# ---- 1. per call -------------------------------------------------------------------
SEGDIR=$PEERS/tmp/ws-pg_wal; rm -rf "$SEGDIR"; mkdir -p "$SEGDIR/archive_status"
for f in $(ls "$PEERS/walsrc" | grep -E '^[0-9A-F]{24}$' | sort | head -64); do
  cp "$PEERS/walsrc/$f" "$SEGDIR/$f"; touch "$SEGDIR/archive_status/$f.ready"
done
chown -R postgres "$SEGDIR"
per_call() { # name, env...  -- the loop runs as postgres in one process, like the archiver
  local name=$1; shift
  local R=$PEERS/repo/ws-$name; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
  rm -rf "$SEGDIR/walship_spool"; for f in $(ls "$SEGDIR" | grep -E '^[0-9A-F]{24}$'); do touch "$SEGDIR/archive_status/$f.ready"; done
  local out=$PEERS/logs/ws-percall-$name.txt; : >"$out"; chown postgres "$out"
  asp env WALSHIP_REPO="${REPO:-file://$R}" WALSHIP_LOG_DESTINATION=none "$@" bash -c '
    for f in $(ls "$1" | grep -E "^[0-9A-F]{24}$" | sort); do
      [ -e "$1/walship_spool/$f.pushed" ] && kind=fast || kind=cold   # acknowledged by an earlier call?
      t0=$(date +%s%N); sh -c "$2 wal-push $1/$f" || echo "FAILED $f" >&2
      echo "$f $(( ($(date +%s%N) - t0) / 1000 )) $kind" >>"$3"
      rm -f "$1/archive_status/$f.ready"      # as the archiver does after success
    done' _ "$SEGDIR" "$WS" "$out"
  python3 - "$out" "$name" <<'PY'
import sys, statistics, json, os
lines = [l.split() for l in open(sys.argv[1])]
rows = [int(l[1]) / 1000 for l in lines]
fast = [int(l[1]) / 1000 for l in lines if l[2] == "fast"]; cold = [int(l[1]) / 1000 for l in lines if l[2] == "cold"]
def q(v, p): return sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
doc = {"tool": "walship", "op": "per-call wal-push (64 segments)", "variant": sys.argv[2], "calls": len(rows),
       "total_s": round(sum(rows) / 1000, 2), "ms_per_segment": round(sum(rows) / len(rows), 1),
       "fast_calls": len(fast), "fast_median_ms": round(statistics.median(fast), 1) if fast else None,
       "fast_p95_ms": round(q(fast, .95), 1) if fast else None, "cold_calls": len(cold),
       "cold_median_ms": round(statistics.median(cold), 1) if cold else None}
open(os.environ["RESULTS"], "a").write(json.dumps(doc) + "\n"); print(json.dumps(doc))
PY
}
log "per call: file, batching (default push_batch=8)"; per_call file-batch
log "per call: file, push_batch=1 (every call cold)"; per_call file-cold WALSHIP_PUSH_BATCH=1
log "per call: S3, batching"; REPO=s3://walship/percall per_call s3-batch $S3ENV
log "per call: S3, push_batch=1"; REPO=s3://walship/percall-cold per_call s3-cold $S3ENV WALSHIP_PUSH_BATCH=1
log "fast path in isolation (20 calls of an acknowledged segment)"
f=$(ls "$SEGDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -1)
R=$PEERS/repo/ws-fast; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
: >"$PEERS/logs/ws-fastpath.txt"; chown postgres "$PEERS/logs/ws-fastpath.txt"
asp env WALSHIP_REPO=file://$R WALSHIP_LOG_DESTINATION=none bash -c '
  "$2" wal-push "$1" >/dev/null 2>&1
  for i in $(seq 20); do
    # the acknowledgement an earlier batch call leaves, then the timed fast call
    "$4" -c "import os,sys; from walship.archive import spool; p=sys.argv[1]; spool.record(p, os.stat(p), spool.spool_dir(p))" "$1"
    t0=$(date +%s%N); sh -c "$2 wal-push $1"; echo $(( ($(date +%s%N) - t0) / 1000 )) >>"$3"
  done' _ "$SEGDIR/$f" "$WS" "$PEERS/logs/ws-fastpath.txt" "$VENV/bin/python"
python3 - "$PEERS/logs/ws-fastpath.txt" <<'PY'
import sys, statistics, json, os
v = sorted(int(l) / 1000 for l in open(sys.argv[1]) if l.strip())
doc = {"tool": "walship", "op": "fast-path call (acknowledged segment), sh -c + python start", "calls": len(v),
       "median_ms": round(statistics.median(v), 1), "max_ms": round(v[-1], 1)}
open(os.environ["RESULTS"], "a").write(json.dumps(doc) + "\n"); print(json.dumps(doc))
PY

# ---- 2. end to end under pgbench -----------------------------------------------------
segno() { python3 -c "import sys; n=sys.argv[1]; print(int(n[8:16],16)*256+int(n[16:24],16))" "$1"; }
e2e() { # name, archive_command
  local name=$1 cmd=$2
  set_archive_command "$cmd"
  psqlc "SELECT pg_switch_wal()" >/dev/null; wait_archiver_idle 600 >/dev/null
  psqlc "CHECKPOINT" >/dev/null; psqlc "SELECT pg_stat_reset_shared('archiver')" >/dev/null
  local l0 w0; l0=$(psqlc "SELECT pg_current_wal_lsn()"); w0=$(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn())")
  local csv=$PEERS/logs/ws-e2e-$name.csv; echo "t,ready,archived_count,failed_count" >"$csv"
  ( t0=$(date +%s); while :; do
      echo "$(( $(date +%s) - t0 )),$(ready_count),$(psqlc "select archived_count||','||failed_count from pg_stat_archiver")" >>"$csv"; sleep 1; done ) &
  local spid=$!
  log "e2e walship $name: pgbench -T $DUR"
  asp env PGOPTIONS="-c synchronous_commit=off" pgbench -c 4 -j 2 -T "$DUR" postgres >"$PEERS/logs/ws-e2e-$name-pgbench.log" 2>&1
  local l1 w1 st rdy; l1=$(psqlc "SELECT pg_current_wal_lsn()"); w1=$(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn())")
  st=$(psqlc "select archived_count||'|'||failed_count||'|'||coalesce(last_archived_wal,'') from pg_stat_archiver"); rdy=$(ready_count)
  IFS='|' read -r arch fail lastw <<<"$st"
  local t0 catch; t0=$(date +%s.%N); wait_archiver_idle 600 >/dev/null; catch=$(echo "$(date +%s.%N) - $t0" | bc)
  sleep 1; kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
  local maxready; maxready=$(tail -n +2 "$csv" | cut -d, -f2 | sort -n | tail -1)
  "$VB/python" "$HERE/record.py" --raw "$RESULTS" tool=walship op="e2e archiving: pgbench -c4 -j2 -T$DUR sync_commit=off" repo="$name" \
    tps="$(grep -oP 'tps = \K[0-9.]+' "$PEERS/logs/ws-e2e-$name-pgbench.log" | head -1)" \
    wal_mib="$(psqlc "SELECT round(pg_wal_lsn_diff('$l1','$l0')/1048576)")" seg_generated="$(( $(segno "$w1") - $(segno "$w0") ))" \
    archived_calls_during_run="$arch" failed="$fail" ready_at_end="$rdy" max_ready_during_run="$maxready" catchup_s="$(printf %.1f "$catch")" \
    cmd="archive_command='$cmd'"
  tail -1 "$RESULTS"
}
R=$PEERS/repo/ws-e2e-file; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
e2e walship-file "env WALSHIP_REPO=file://$R $WS wal-push %p"
e2e walship-s3 "env WALSHIP_REPO=s3://walship/e2e $S3ENV $WS wal-push %p"
# ---- 3. drain: the highest archiving rate each tool reaches --------------------------
# Archiving is stopped (archive_command = /bin/false) while pgbench writes for $BURST s,
# then the tool's command is set and the time until no .ready file is left is measured.
S3PB=("repo1-type=s3" "repo1-s3-bucket=pgbr" "repo1-s3-endpoint=127.0.0.1" "repo1-storage-port=$MOTO_TLS_PORT"
      "repo1-s3-region=us-east-1" "repo1-s3-key=testing" "repo1-s3-key-secret=testing" "repo1-s3-uri-style=path"
      "repo1-storage-verify-tls=n")
moto_up tls; s3mb "https://127.0.0.1:$MOTO_TLS_PORT" pgbr >/dev/null 2>&1; s3mb "$EP" barman >/dev/null 2>&1
BURST=${BURST:-30}
drain() { # tool name archive_command
  local tool=$1 name=$2 cmd=$3
  set_archive_command /bin/false
  asp env PGOPTIONS="-c synchronous_commit=off" pgbench -c 4 -j 2 -T "$BURST" postgres >/dev/null 2>&1
  psqlc "SELECT pg_switch_wal()" >/dev/null
  local n; n=$(ready_count)
  local t0; t0=$(date +%s.%N)
  set_archive_command "$cmd"
  wait_archiver_idle 900 >/dev/null
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
  "$VB/python" "$HERE/record.py" --raw "$RESULTS" tool="$tool" op="drain: backlog of .ready segments" repo="$name" \
    segments="$n" drain_s="$(printf %.1f "$secs")" segments_per_s="$(echo "scale=2; $n / $secs" | bc)" \
    left="$(ready_count)" cmd="archive_command='$cmd'"
  tail -1 "$RESULTS"
}
R=$PEERS/repo/ws-drain-file; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
drain walship walship-file "env WALSHIP_REPO=file://$R $WS wal-push %p"
drain walship walship-s3 "env WALSHIP_REPO=s3://walship/drain $S3ENV $WS wal-push %p"
R=$PEERS/repo/drain-pgbr-gz; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
C=$(pgbr_conf drain-gz "repo1-type=posix" "repo1-path=$R"); asp pgbackrest --config="$C" --stanza=main stanza-create >/dev/null
drain pgbackrest pgbr-gz "pgbackrest --config=$C --stanza=main archive-push %p"
R=$PEERS/repo/drain-pgbr-async; rm -rf "$R"; mkdir -p "$R"; chown postgres "$R"
C=$(pgbr_conf drain-async "repo1-type=posix" "repo1-path=$R" "archive-async=y" "process-max=2")
asp pgbackrest --config="$C" --stanza=main stanza-create >/dev/null
drain pgbackrest pgbr-async "pgbackrest --config=$C --stanza=main archive-push %p"
C=$(pgbr_conf drain-s3-async "${S3PB[@]}" "repo1-path=/drain-s3-async" "archive-async=y" "process-max=2")
asp pgbackrest --config="$C" --stanza=main stanza-create >/dev/null
drain pgbackrest pgbr-s3-async "pgbackrest --config=$C --stanza=main archive-push %p"
drain barman-cloud barman-lz4 "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 $VB/barman-cloud-wal-archive --endpoint-url $EP --lz4 s3://barman/drain-lz4 main %p"
set_archive_command /bin/true
moto_down plain; moto_down tls

log "peers: $PEER_CONFIGS"
RESULTS=$RESULTS RUN=walship-bench DUR=$DUR CONFIGS="$PEER_CONFIGS" bash "$PEERDIR/30_wal_e2e.sh"
python3 "$ROOT/bench/archive/report.py" "$RESULTS"
