#!/usr/bin/env bash
# Daily base backup of the usage-ledger PostgreSQL, with retention.
#
#  1. pg_basebackup: tar format, compressed, the WAL of the backup streamed
#     into it (so each backup restores on its own, even without the archive).
#  2. pg_verifybackup against the backup manifest, on an extracted copy
#     (PostgreSQL before 18 verifies plain-format backups only). This also
#     proves the tarballs decompress. A backup that fails is deleted and the
#     run fails; nothing is pruned then.
#  3. Retention: base backups older than RETENTION_DAYS are deleted (the
#     newest is always kept), then archived WAL older than the start of the
#     oldest base backup still kept (pg_archivecleanup). The window of
#     point-in-time recovery is therefore "oldest kept backup .. now".
#
# Environment:
#   PGHOST, PGPORT, PGUSER  libpq connection of a role with REPLICATION (a
#                           password goes in ~/.pgpass or PGPASSFILE)
#   BACKUP_DIR              required; one directory per backup, named by
#                           UTC start time (20250101T023000Z)
#   WAL_ARCHIVE_DIR         required; where archive_command copies WAL
#   RETENTION_DAYS          default 7; at least 1
#   BASEBACKUP_CHECKPOINT   spread (default: gentle on a busy server, can take
#                           checkpoint_timeout * checkpoint_completion_target
#                           to start) or fast
#   BASEBACKUP_COMPRESS     pg_basebackup --compress, default gzip
#   PG_BIN                  PostgreSQL bin directory (default: the newest
#                           /usr/lib/postgresql/*/bin, else the directory of
#                           pg_basebackup on PATH)
#
# Run it as the postgres OS user (or any user that owns BACKUP_DIR and can
# delete from WAL_ARCHIVE_DIR). Progress goes to stderr; on success the new
# backup's directory is the one line on stdout.
set -euo pipefail

log() { printf 'base-backup: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

: "${BACKUP_DIR:?BACKUP_DIR is required}"
: "${WAL_ARCHIVE_DIR:?WAL_ARCHIVE_DIR is required}"
RETENTION_DAYS=${RETENTION_DAYS:-7}
BASEBACKUP_CHECKPOINT=${BASEBACKUP_CHECKPOINT:-spread}
BASEBACKUP_COMPRESS=${BASEBACKUP_COMPRESS:-gzip}

[[ $RETENTION_DAYS =~ ^[1-9][0-9]*$ ]] || die "RETENTION_DAYS must be a whole number >= 1, got '$RETENTION_DAYS'"
case $BASEBACKUP_CHECKPOINT in spread | fast) ;; *) die "BASEBACKUP_CHECKPOINT must be spread or fast" ;; esac
[ -d "$BACKUP_DIR" ] || die "BACKUP_DIR $BACKUP_DIR does not exist"
[ -d "$WAL_ARCHIVE_DIR" ] || die "WAL_ARCHIVE_DIR $WAL_ARCHIVE_DIR does not exist"

# Debian's /usr/bin/pg_* are wrappers, hence the versioned directory first;
# the newest one also handles older servers.
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$PG_BIN" ] && command -v pg_basebackup >/dev/null 2>&1; then
  PG_BIN=$(dirname "$(command -v pg_basebackup)")
fi
for tool in pg_basebackup pg_verifybackup pg_archivecleanup; do
  [ -x "$PG_BIN/$tool" ] || die "$tool not found in PG_BIN=${PG_BIN:-<empty>}"
done

# One run at a time: a second run would race the first one's retention.
exec 9>"$BACKUP_DIR/.lock"
flock -n 9 || die "another base backup is running in $BACKUP_DIR"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$BACKUP_DIR/$stamp"
partial="$BACKUP_DIR/.partial-$stamp"
verify=""
cleanup() {
  [ -n "$verify" ] && rm -rf "$verify"
  rm -rf "$partial"
}
trap cleanup EXIT
[ ! -e "$final" ] || die "$final already exists"

# ------------------------------------------------------------- 1. backup
log "pg_basebackup to $final (host ${PGHOST:-<default>}, port ${PGPORT:-<default>}, checkpoint $BASEBACKUP_CHECKPOINT)"
started=$(date +%s)
"$PG_BIN/pg_basebackup" \
  --pgdata="$partial" \
  --format=tar \
  --compress="$BASEBACKUP_COMPRESS" \
  --wal-method=stream \
  --checkpoint="$BASEBACKUP_CHECKPOINT" \
  --label="convergio-$stamp" \
  --manifest-checksums=CRC32C \
  --no-password

# ------------------------------------------------------------- 2. verify
shopt -s nullglob
base=("$partial"/base.tar*)
wal=("$partial"/pg_wal.tar*)
tablespaces=("$partial"/[0-9]*.tar*)
shopt -u nullglob
[ ${#base[@]} -eq 1 ] || die "expected one base.tar* in $partial"
[ ${#wal[@]} -eq 1 ] || die "expected one pg_wal.tar* in $partial"
# Extra tablespaces would need their tarballs laid out under pg_tblspc to be
# verified; the ledger has none, so fail loudly rather than verify half.
[ ${#tablespaces[@]} -eq 0 ] || die "tablespace tarballs found (${tablespaces[*]}); extend the verification before relying on these backups"

verify=$(mktemp -d "$BACKUP_DIR/.verify-$stamp.XXXXXX")
# GNU tar picks the decompressor from the file (gzip; lz4/zstd need their tools).
tar -xf "${base[0]}" -C "$verify"
mkdir -p "$verify/pg_wal"
tar -xf "${wal[0]}" -C "$verify/pg_wal"
cp "$partial/backup_manifest" "$verify/backup_manifest"
"$PG_BIN/pg_verifybackup" --quiet --wal-directory="$verify/pg_wal" "$verify" ||
  die "pg_verifybackup failed: the backup is not trustworthy and was deleted"

# Where replay from this backup starts: the oldest archived WAL it needs.
start_wal=$(sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]\{24\}\))$/\1/p' "$verify/backup_label")
[ -n "$start_wal" ] || die "no START WAL LOCATION in backup_label"
printf '%s\n' "$start_wal" >"$partial/start_wal"
rm -rf "$verify"
verify=""

mv "$partial" "$final"
size=$(du -sh "$final" | cut -f1)
log "verified backup $final ($size, starts at WAL $start_wal, $(($(date +%s) - started)) s)"

# ------------------------------------------------------------- 3. retention
cutoff=$(date -u -d "-$RETENTION_DAYS days" +%Y%m%dT%H%M%SZ)
mapfile -t backups < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d \
  -regextype posix-extended -regex '.*/[0-9]{8}T[0-9]{6}Z' -printf '%f\n' | sort)
kept=()
for name in "${backups[@]}"; do
  # Names are UTC timestamps, so string order is time order.
  if [[ $name < $cutoff && $name != "$stamp" ]]; then
    log "pruning base backup $name (older than $RETENTION_DAYS days)"
    rm -rf "${BACKUP_DIR:?}/$name"
  else
    kept+=("$name")
  fi
done

oldest=${kept[0]}
if [ -s "$BACKUP_DIR/$oldest/start_wal" ]; then
  keep_from=$(cat "$BACKUP_DIR/$oldest/start_wal")
  before=$(find "$WAL_ARCHIVE_DIR" -maxdepth 1 -type f | wc -l)
  # Removes only WAL segment files named before keep_from (history and other
  # files stay), so replay from the oldest kept backup stays possible.
  "$PG_BIN/pg_archivecleanup" "$WAL_ARCHIVE_DIR" "$keep_from"
  after=$(find "$WAL_ARCHIVE_DIR" -maxdepth 1 -type f | wc -l)
  log "WAL archive: kept from $keep_from (oldest kept backup $oldest), removed $((before - after)) files"
else
  log "WARNING: $oldest has no start_wal file; archived WAL not pruned"
fi
log "${#kept[@]} base backup(s) kept: ${kept[*]}"

printf '%s\n' "$final"
