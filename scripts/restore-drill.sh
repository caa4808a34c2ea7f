#!/usr/bin/env bash
# Restore drill: a real point-in-time restore of the usage ledger, on scratch
# servers, in about 20 seconds. Run it monthly (docs/backups-and-dr.md).
#
#  1. A scratch primary (initdb, a free port) archiving WAL with the
#     archive_command of infra/postgres/postgresql.backup.conf (the archive
#     path swapped for a scratch one); the schema from src/db/migrations
#     (001_ledger.sql, 002_control.sql, ... in order); batch A of
#     usage_events.
#  2. A base backup with infra/postgres/base-backup.sh (verify and retention
#     included), then batch B, a WAL switch, the target time, batch C, a WAL
#     switch. The primary is then stopped at once (immediate), as in a
#     crash.
#  3. The restore: a new data directory from the base backup (its own pg_wal
#     left out, so every WAL record comes from the archive),
#     recovery.signal, restore_command from the same conf file,
#     recovery_target_time = the target, promote; started on another port.
#  4. The check: the restored ledger holds exactly batches A and B (count and
#     md5 of the ordered request ids), nothing of C; exit 1 otherwise.
#
# Last line of stdout (machine-readable), also printed on a failed check:
#   restore-drill: rows_verified=N rto_s=X.XX rpo_s=Y.YY
#   rto_s  restore start (empty directory) -> restored server answering with
#          verified data
#   rpo_s  committed data before the target that the restore lost, in
#          seconds (newest such row in the source minus newest in the
#          restore); 0.00 when the restore is exact
# The readable summary above it adds the WAL archive lag, the achievable RPO.
#
# Environment: PG_BIN (default: newest /usr/lib/postgresql/*/bin),
# DRILL_ROWS (rows per batch, default 500), KEEP_DRILL_DIR=1 (keep the
# scratch directory; the servers are stopped anyway), TMPDIR.
# DRILL_FAULT tests the drill itself, which must then fail (exit 1):
#   early-target  restore to a moment before batch B (the check must catch it)
#   lose-wal      delete the archived segment holding batch B (the restore
#                 must not reach the target)
# As root, the servers and the backup run as the postgres OS user (runuser);
# as any other user, as that user.
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_SRC="$ROOT/infra/postgres/postgresql.backup.conf"
BACKUP_SRC="$ROOT/infra/postgres/base-backup.sh"
# Every migration, in order (001_ledger.sql, 002_control.sql, ...), as
# src/db/migrate.ts applies them.
MIGRATIONS=("$ROOT"/src/db/migrations/[0-9]*.sql)
# The path postgresql.backup.conf archives to; the drill swaps it for its own.
PROD_ARCHIVE=/var/lib/postgresql/wal_archive
ROWS=${DRILL_ROWS:-500}
TIMEOUT_S=120

log() { printf '[drill] %s\n' "$*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

[[ $ROWS =~ ^[1-9][0-9]*$ ]] || die "DRILL_ROWS must be a positive integer"
for f in "$CONF_SRC" "$BACKUP_SRC" "${MIGRATIONS[@]}"; do [ -r "$f" ] || die "missing $f"; done
[[ ${MIGRATIONS[0]} == */001_ledger.sql ]] || die "src/db/migrations/001_ledger.sql not found"

if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
fi
for tool in initdb pg_ctl postgres psql pg_basebackup pg_verifybackup pg_archivecleanup; do
  [ -x "${PG_BIN:-}/$tool" ] || die "$tool not found in PG_BIN=${PG_BIN:-<empty>} (set PG_BIN)"
done

# initdb and postgres refuse to run as root. The postgres user may not be
# allowed into the caller's working directory, hence cd /.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a postgres OS user"
  as_pg() { (cd / && exec runuser -u postgres -- "$@"); }
else
  as_pg() { (cd / && exec "$@"); }
fi

# A port nothing listens on (bash's /dev/tcp connect fails), below the
# kernel's ephemeral range so no client socket or port-0 listener (other
# tests' servers) can be handed it meanwhile. A fixed-port server starting in
# between would still make pg_ctl fail: rare enough.
free_port() {
  local port low=32768 _
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [[ $low =~ ^[0-9]+$ && $low -gt 20000 ]] || low=32768
  for _ in $(seq 1 100); do
    port=$((15000 + RANDOM % (low - 15000)))
    [[ " $* " == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# -------------------------------------------------------------- scratch area
DRILL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cvg-restore-drill.XXXXXX")
# The path ends up inside archive_command / restore_command strings.
[[ $DRILL_DIR =~ ^[A-Za-z0-9/._-]+$ ]] || die "scratch path $DRILL_DIR has characters unsafe in archive_command; set TMPDIR"
PRIMARY="$DRILL_DIR/primary"
RESTORED="$DRILL_DIR/restored"
ARCHIVE="$DRILL_DIR/wal_archive"
BACKUPS="$DRILL_DIR/backups"
ETC="$DRILL_DIR/etc"
PRIMARY_PORT=""
RESTORED_PORT=""

server_pid() { [ -f "$1/postmaster.pid" ] && head -n 1 "$1/postmaster.pid" 2>/dev/null; }

# Running, not a zombie (under some container inits an exited postmaster
# waits a while to be reaped, and kill -0 still succeeds on it).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $state && $state != Z* ]]
}

stop_server() { # data dir; never leave a server running, whatever state it is in
  local dir=$1 pid _
  pid=$(server_pid "$dir") || return 0
  [ -n "$pid" ] || return 0
  as_pg "$PG_BIN/pg_ctl" stop -D "$dir" -m immediate -w -t 30 >/dev/null 2>&1 || true
  # pg_ctl returns once postmaster.pid is gone, a moment before the process.
  for _ in $(seq 1 100); do
    alive "$pid" || return 0
    sleep 0.05
  done
  log "pg_ctl could not stop server $pid ($dir); killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server "$RESTORED"
  stop_server "$PRIMARY"
  if [ "$rc" -ne 0 ]; then
    for f in "$PRIMARY/server.log" "$RESTORED/server.log"; do
      [ -f "$f" ] || continue
      log "--- tail of $f ---"
      tail -n 25 "$f" >&2 || true
    done
  fi
  if [ "${KEEP_DRILL_DIR:-}" = 1 ]; then
    log "kept $DRILL_DIR (KEEP_DRILL_DIR=1)"
  else
    rm -rf "$DRILL_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$ARCHIVE" "$BACKUPS" "$ETC"
cp "$CONF_SRC" "$ETC/postgresql.backup.conf"
cp "$BACKUP_SRC" "$ETC/base-backup.sh"
if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$DRILL_DIR"; fi
chmod 0755 "$DRILL_DIR"
log "scratch directory $DRILL_DIR"

# The production commands with the archive path swapped; refuse to guess if
# the conf file no longer has the line or the path.
conf_command() { # setting name
  local line
  line=$(grep -E "^[[:space:]]*$1[[:space:]]*=" "$CONF_SRC" | tail -n 1) || die "no $1 in $CONF_SRC"
  [[ $line == *"$PROD_ARCHIVE"* ]] || die "$1 in $CONF_SRC does not use $PROD_ARCHIVE; update PROD_ARCHIVE in $0"
  printf '%s\n' "${line//"$PROD_ARCHIVE"/$ARCHIVE}"
}
ARCHIVE_COMMAND_LINE=$(conf_command archive_command)
RESTORE_COMMAND_LINE=$(conf_command restore_command)

# Connection settings of the caller must not leak into the drill.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSFILE PGSSLMODE
export PGTZ=UTC PGCONNECT_TIMEOUT=5

sql() { # port, SQL -> unaligned, tuples only
  psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

wait_until() { # description, command...: poll the command for up to TIMEOUT_S
  local what=$1 deadline
  shift
  deadline=$(($(date +%s) + TIMEOUT_S))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${TIMEOUT_S}s waiting for $what"
    sleep 0.05
  done
}

# ------------------------------------------------------------- 1. primary
PRIMARY_PORT=$(free_port)
log "primary: initdb, port $PRIMARY_PORT, archiving to $ARCHIVE"
as_pg "$PG_BIN/initdb" -D "$PRIMARY" -A trust -U postgres --no-sync --locale=C -E UTF8 >"$DRILL_DIR/initdb.log" 2>&1 ||
  {
    cat "$DRILL_DIR/initdb.log" >&2
    die "initdb failed"
  }
as_pg tee -a "$PRIMARY/postgresql.conf" >/dev/null <<EOF

# ---- restore drill: production backup settings, then scratch overrides
include '$ETC/postgresql.backup.conf'
$ARCHIVE_COMMAND_LINE
$RESTORE_COMMAND_LINE
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
# TCP only: nothing to clash with another server's socket.
unix_socket_directories = ''
# A scratch server: its durability is not what is under test.
fsync = off
EOF
as_pg "$PG_BIN/pg_ctl" start -D "$PRIMARY" -l "$PRIMARY/server.log" -w -t 60 >/dev/null ||
  die "primary did not start"
log "primary: $(sql "$PRIMARY_PORT" "SELECT version()" | cut -d, -f1)"
[ "$(sql "$PRIMARY_PORT" "SHOW archive_mode")" = on ] || die "archive_mode is not on"

for m in "${MIGRATIONS[@]}"; do
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -1 -f "$m" >/dev/null ||
    die "migration $m failed"
done
log "schema: applied ${MIGRATIONS[*]##*/}"

write_batch() { # name: ROWS usage events, one transaction; occurred_at = row time
  sql "$PRIMARY_PORT" "
    INSERT INTO usage_events (request_id, tenant_id, user_id, session_id, provider, model,
      input_tokens, output_tokens, tool_calls_count, audio_seconds_in, audio_seconds_out,
      latency_ms, success, error_code, mode, cost_usd, occurred_at, batch_id)
    SELECT format('drill-$1-%s', lpad(i::text, 6, '0')), 'tenant-' || (i % 7), 'user-' || (i % 31),
      'session-' || (i % 5), 'openai', 'gpt-4o-mini', 100 + i, 20 + i % 50, i % 3, 0, 0,
      40 + i % 200, i % 17 <> 0, CASE WHEN i % 17 = 0 THEN 'upstream_error' END,
      CASE WHEN i % 2 = 0 THEN 'managed' ELSE 'byok' END, round((i * 0.000137)::numeric, 6),
      clock_timestamp(), 'drill-$1'
    FROM generate_series(1, $ROWS) AS i" >/dev/null
  local n
  n=$(sql "$PRIMARY_PORT" "SELECT count(*) FROM usage_events WHERE batch_id = 'drill-$1'")
  [ "$n" -eq "$ROWS" ] || die "batch $1: wrote $n rows, meant $ROWS"
  echo "restore-drill: wrote batch=$1 rows=$n"
}

# Whether the archiver has archived segment $1; a failed attempt ends the
# drill at once (the reason is in the primary's server.log).
archived() {
  local state
  state=$(sql "$PRIMARY_PORT" "SELECT coalesce((last_archived_wal >= '$1')::text, 'false') || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '-') FROM pg_stat_archiver")
  [ "${state#* }" = "0 -" ] || die "archive_command failed (archiver: $state)"
  [ -f "$ARCHIVE/$1" ] && [ "${state%% *}" = true ]
}

# Switches to a new WAL segment and waits until the finished one is archived:
# SEGMENT is its name, ARCHIVED_AT the archiver's time for it (epoch seconds,
# server clock).
SEGMENT=""
ARCHIVED_AT=""
switch_and_archive() {
  SEGMENT=$(sql "$PRIMARY_PORT" "SELECT pg_walfile_name(pg_switch_wal())")
  wait_until "WAL segment $SEGMENT to be archived" archived "$SEGMENT"
  ARCHIVED_AT=$(sql "$PRIMARY_PORT" "SELECT extract(epoch FROM last_archived_time) FROM pg_stat_archiver")
}

promoted() {
  [ "$(sql "$RESTORED_PORT" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]
}

drill_started=$(now)
write_batch A

# ------------------------------------------------------------- 2. backup
# A backup older than any retention, to see base-backup.sh prune it.
as_pg mkdir "$BACKUPS/20000101T000000Z"
log "base backup: infra/postgres/base-backup.sh (fast checkpoint, RETENTION_DAYS=7)"
backup=$(as_pg env PGHOST=127.0.0.1 PGPORT="$PRIMARY_PORT" PGUSER=postgres PG_BIN="$PG_BIN" \
  BACKUP_DIR="$BACKUPS" WAL_ARCHIVE_DIR="$ARCHIVE" RETENTION_DAYS=7 BASEBACKUP_CHECKPOINT=fast \
  bash "$ETC/base-backup.sh") || die "base-backup.sh failed"
[ -f "$backup/backup_manifest" ] || die "base-backup.sh printed '$backup', not a backup"
[ ! -e "$BACKUPS/20000101T000000Z" ] || die "base-backup.sh did not prune an expired backup"

# Self-test of the drill (DRILL_FAULT): the restore point is taken before
# batch B, so the check must find B missing.
early_target=$(sql "$PRIMARY_PORT" "SELECT clock_timestamp()")

write_batch B
b_last=$(sql "$PRIMARY_PORT" "SELECT extract(epoch FROM max(occurred_at)) FROM usage_events")
b_committed=$(sql "$PRIMARY_PORT" "SELECT extract(epoch FROM clock_timestamp())")
switch_and_archive
b_segment=$SEGMENT
archive_lag=$(elapsed "$b_committed" "$ARCHIVED_AT")
expected=$(sql "$PRIMARY_PORT" "SELECT count(*) || ' ' || md5(string_agg(request_id, ',' ORDER BY request_id)) FROM usage_events")
# Recovery stops at the first commit after the target; a clean second on
# each side keeps B and C apart whatever the clock resolution.
sleep 1
target=$(sql "$PRIMARY_PORT" "SELECT clock_timestamp()")
sleep 1
write_batch C
switch_and_archive
log "target time $target; batch B archived ${archive_lag}s after its commit"

case ${DRILL_FAULT:-} in
  "") ;;
  early-target)
    log "DRILL_FAULT=early-target: restoring to $early_target, before batch B; the drill must FAIL"
    target=$early_target
    ;;
  lose-wal)
    log "DRILL_FAULT=lose-wal: deleting archived segment $b_segment (batch B); the drill must FAIL"
    rm -f "$ARCHIVE/$b_segment"
    ;;
  *) die "unknown DRILL_FAULT '$DRILL_FAULT' (early-target or lose-wal)" ;;
esac

# The primary is lost.
stop_server "$PRIMARY"
log "primary stopped (immediate, as in a crash)"

# ------------------------------------------------------------- 3. restore
RESTORED_PORT=$(free_port "$PRIMARY_PORT")
restore_started=$(now)
log "restore: $backup -> $RESTORED, port $RESTORED_PORT, recovery_target_time '$target'"
as_pg mkdir -m 0700 "$RESTORED"
as_pg tar -xf "$backup"/base.tar* -C "$RESTORED"
# The backup's own pg_wal.tar is left out on purpose: replay must come from
# the archive, which is what a restore to any later point relies on.
as_pg mkdir -p "$RESTORED/pg_wal/archive_status"
as_pg rm -f "$RESTORED/postmaster.pid" "$RESTORED/postmaster.opts"
as_pg tee -a "$RESTORED/postgresql.conf" >/dev/null <<EOF

# ---- restore drill: point-in-time recovery
port = $RESTORED_PORT
$RESTORE_COMMAND_LINE
recovery_target_time = '$target'
recovery_target_action = 'promote'
# The drill's restored server must not add its new timeline to the scratch
# archive (a production restore keeps archiving).
archive_mode = off
EOF
as_pg touch "$RESTORED/recovery.signal"
as_pg "$PG_BIN/pg_ctl" start -D "$RESTORED" -l "$RESTORED/server.log" -w -t "$TIMEOUT_S" >/dev/null ||
  die "restored server did not start"
wait_until "recovery to finish (pg_is_in_recovery() = false)" promoted

# ------------------------------------------------------------- 4. verify
got=$(sql "$RESTORED_PORT" "SELECT count(*) || ' ' || coalesce(md5(string_agg(request_id, ',' ORDER BY request_id)), '-') FROM usage_events")
c_rows=$(sql "$RESTORED_PORT" "SELECT count(*) FROM usage_events WHERE batch_id = 'drill-C'")
restored_last=$(sql "$RESTORED_PORT" "SELECT coalesce(extract(epoch FROM max(occurred_at)), $drill_started) FROM usage_events")
restored_done=$(now)

rows_verified=${got%% *}
rto=$(elapsed "$restore_started" "$restored_done")
rpo=$(awk -v a="$restored_last" -v b="$b_last" 'BEGIN { d = b - a; printf "%.2f", (d > 0 ? d : 0) }')
ok=1
[ "$got" = "$expected" ] || ok=0
[ "$c_rows" -eq 0 ] || ok=0
[ "$rows_verified" -eq $((2 * ROWS)) ] || ok=0
stopped_at=$(grep -o 'recovery stopping before [^,]*, time [^"]*' "$RESTORED/server.log" | head -n 1 || true)

cat <<EOF
restore-drill summary
  server            $(sql "$RESTORED_PORT" "SHOW server_version")
  base backup       $backup
  target time       $target
  rows written      A=$ROWS B=$ROWS (before the target), C=$ROWS (after)
  rows restored     $rows_verified, batch C rows: $c_rows (expected $((2 * ROWS)) and 0)
  checksum          restored ${got#* }, source ${expected#* }
  recovery          ${stopped_at:-(no "recovery stopping" line in server.log)}
  RTO measured      ${rto} s (empty directory -> promoted server answering with verified data)
  RPO vs target     ${rpo} s of committed data lost
  WAL archive lag   ${archive_lag} s (last commit before the target -> its segment archived, forced switch)
                    achievable RPO in production: archive_timeout ($(sed -n 's/^archive_timeout *= *\([0-9]*\).*/\1/p' "$CONF_SRC") s) + this lag
  drill total       $(elapsed "$drill_started" "$(now)") s
  result            $([ "$ok" = 1 ] && echo PASS || echo FAIL)
EOF
echo "restore-drill: rows_verified=$rows_verified rto_s=$rto rpo_s=$rpo"
[ "$ok" = 1 ] || die "the restored ledger does not match the source at the target time"
