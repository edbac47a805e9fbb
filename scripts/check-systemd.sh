#!/usr/bin/env bash
# Check systemd/switchboard.service with systemd's own tools:
#
# 1. `systemd-analyze verify` prints nothing. It exits 0 even on unknown keys or bad values, so
#    any output fails. verify also insists that ExecStart= names an existing executable: the
#    check runs on a temporary copy whose ExecStart=/ExecStartPre=/ExecReload= point at the built binary
#    ($SWITCHBOARD_BIN, default: `cargo build --bin switchboard`, then target/debug).
# 2. `systemd-analyze security --offline=yes` rates the unit's exposure at most $MAX_EXPOSURE
#    (default 2.0, "OK" or better on systemd's 0-10 scale).
# 3. The system call filter still allows what shard thread pinning needs (sched_setaffinity,
#    in @resources): the unit must not deny @resources.
#
#   scripts/check-systemd.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT=${UNIT:-$ROOT/systemd/switchboard.service}
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
INSTALLED=/usr/local/bin/switchboard

die() { echo "check-systemd: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || die "systemd-analyze is required (apt-get install systemd)"
[[ -f $UNIT ]] || die "no unit file at $UNIT"

if [[ -n ${SWITCHBOARD_BIN:-} ]]; then
    BIN=$(realpath "$SWITCHBOARD_BIN")
else
    (cd "$ROOT" && cargo build --quiet --bin switchboard)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchboard
fi
[[ -x $BIN ]] || die "$BIN is not executable"
echo "systemd: $(systemd-analyze --version | head -1)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-unit.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
COPY=$WORK/switchboard.service
# Only the executable's path changes; everything else is checked as shipped.
grep -q "^ExecStart=$INSTALLED " "$UNIT" || die "ExecStart= no longer starts with $INSTALLED: update this script"
sed -E "s#^(Exec(Start|StartPre|Reload)=)$INSTALLED #\1$BIN #" "$UNIT" > "$COPY"

echo "== systemd-analyze verify"
status=0
out=$(systemd-analyze verify "$COPY" 2>&1) || status=$?
if [[ $status != 0 || -n $out ]]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify: exit $status, output above (it must print nothing)"
fi
echo "clean"

echo "== systemd-analyze security --offline=yes"
status=0
out=$(systemd-analyze security --offline=yes --no-pager "$COPY" 2>&1) || status=$?
printf '%s\n' "$out" | grep -E '^✗|Overall exposure' || true
level=$(printf '%s\n' "$out" | sed -nE 's/.*Overall exposure level for [^:]+: ([0-9]+\.[0-9]+).*/\1/p')
[[ -n $level ]] || { printf '%s\n' "$out" >&2; die "no \"Overall exposure level\" line (exit $status)"; }
awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }' \
    || die "exposure $level is above $MAX_EXPOSURE"
echo "exposure $level <= $MAX_EXPOSURE"

echo "== thread pinning stays allowed"
filters=$(sed -nE 's/^SystemCallFilter=(.*)/\1/p' "$UNIT")
grep -q '@system-service' <<<"$filters" || die "SystemCallFilter= no longer allows @system-service"
if grep -E '^~' <<<"$filters" | grep -qE '@resources|sched_setaffinity'; then
    die "SystemCallFilter= denies @resources or sched_setaffinity: shard threads pin themselves"
fi
echo "@resources allowed (sched_setaffinity for pinned shard threads)"
