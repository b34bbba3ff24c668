#!/usr/bin/env bash
# Restores of the same data by pgBackRest and walship, interleaved (A B A B ...), from the file
# repositories that ../shared/bench/peers/10_pgbackrest_posix.sh and bench/backup/peers.sh left
# in $PEERS. A restore into a local directory is bound by this machine's disk (~300 MB/s) and its
# figures drift by a second between runs minutes apart; interleaving compares runs seconds apart.
# Each restore: an empty directory, `sync`, 2 s of rest, then the tool as postgres under
# /usr/bin/time (wall, user, sys, peak RSS); both tools fsync what they write before exiting.
#
#   PEERS=/tmp/peers ROUNDS=5 CODEC=lz4 bench/backup/restore_ab.sh      # CODEC=zstd compares zst
set -euo pipefail
PEERS=${PEERS:-/tmp/peers}; ROUNDS=${ROUNDS:-5}; CODEC=${CODEC:-lz4}
WALSHIP=${WALSHIP_VENV:-/opt/walship/venv}/bin/walship
case $CODEC in lz4) variant=lz4pm2 ;; zstd) variant=zstpm2 ;; *) echo "CODEC is lz4 or zstd" >&2; exit 2 ;; esac
conf=$PEERS/pgbr/posix-$variant/pgbackrest.conf
repo=$PEERS/repo/walship-$CODEC
[ -f "$conf" ] && [ -d "$repo" ] || { echo "run 10_pgbackrest_posix.sh and bench/backup/peers.sh for $PEERS first" >&2; exit 1; }
dest=$PEERS/restore/ab
declare -A walls
for round in $(seq "$ROUNDS"); do
  for tool in pgbackrest walship; do
    rm -rf "$dest"; mkdir -p "$dest"; chown postgres "$dest"; chmod 700 "$dest"; sync; sleep 2
    if [ "$tool" = pgbackrest ]; then
      cmd=(pgbackrest "--config=$conf" --stanza=main "--pg1-path=$dest" restore)
    else
      cmd=(env "WALSHIP_REPO=file://$repo" "$WALSHIP" backup-fetch "$dest" LATEST --progress none)
    fi
    out=$(runuser -u postgres -- /usr/bin/time -f "%e %U %S %M" "${cmd[@]}" 2>&1 | tail -1)
    read -r wall user sys rss <<<"$out"
    printf '%-10s round %d: %5.2f s wall, %5.2f s CPU, %4.0f MiB peak RSS\n' "$tool" "$round" "$wall" \
      "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc)"
    walls[$tool]="${walls[$tool]:-} $wall"
  done
done
rm -rf "$dest"
for tool in pgbackrest walship; do
  median=$(tr ' ' '\n' <<<"${walls[$tool]}" | grep . | sort -n |
           awk '{a[NR]=$1} END {printf "%.2f", NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  echo "$tool ($CODEC): median $median s of:${walls[$tool]}"
done
