#!/usr/bin/env bash
# Lint a live daemon's /metrics with Prometheus's own linter, `promtool check metrics`.
#
# Starts a throwaway daemon (scripts/lib/daemon.sh), posts signed fixtures of every kind
# (messages, a status, account and preference updates, an unrouted and an invalid item, a
# duplicate) and a few refused requests, reads the API, sends messages through a Graph API
# simulator (switchboard-sim: one accepted, one refused for a closed window, one whose token
# the simulator refuses, which pauses the number), waits for a timed checkpoint, then
# pipes /metrics through promtool. Fails on ANY promtool output: promtool exits 0 on some
# lint findings.
#
# promtool comes from $PROMTOOL, the PATH, or Debian's `prometheus` package unpacked into
# target/tools (`apt-get download` + `dpkg -x`; the server is not installed).
#
#   scripts/check-metrics.sh
#   SWITCHBOARD_BIN=target/release/switchboard scripts/check-metrics.sh
set -euo pipefail
# shellcheck source=lib/daemon.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

find_promtool() {
    if [[ -n ${PROMTOOL:-} ]]; then echo "$PROMTOOL"; return; fi
    if command -v promtool >/dev/null; then command -v promtool; return; fi
    local dir=${CARGO_TARGET_DIR:-$SB_ROOT/target}/tools/prometheus
    if [[ ! -x $dir/usr/bin/promtool ]]; then
        local dl
        dl=$(mktemp -d)
        chmod 0777 "$dl" # apt's download sandbox user writes here
        if ! (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1); then
            apt-get update -qq >/dev/null
            (cd "$dl" && apt-get download -qq prometheus >/dev/null)
        fi
        mkdir -p "$dir"
        dpkg -x "$dl"/prometheus_*.deb "$dir"
        rm -rf "$dl"
    fi
    echo "$dir/usr/bin/promtool"
}

expect() { # what got want
    [[ $2 == "$3" ]] || sb_die "$1: HTTP $2, expected $3"
}

PROMTOOL_BIN=$(find_promtool)
echo "promtool: $("$PROMTOOL_BIN" --version 2>&1 | head -1)"

SB_SIM=1 sb_start
echo "daemon: pid $SB_PID, https $SB_HTTPS, metrics $SB_METRICS"

FIX=$SB_ROOT/tests/fixtures/whatsapp
for f in crafted/text_korean.json crafted/text_chinese.json crafted/status_failed_131047.json \
         crafted/quality_update_flagged.json crafted/user_preferences_stop.json \
         crafted/missing_sender.json \
         Bindambc__whatsapp-business-java-api/deserialization__textMessage.json \
         crafted/text_korean.json; do
    expect "POST $f" "$(sb_post "$FIX/$f")" 200
done
expect "POST with a wrong secret" "$(sb_post "$FIX/crafted/text_chinese.json" wrong-secret)" 401
printf '{not json' > "$SB_WORK/bad.json"
expect "POST of a malformed body" "$(sb_post "$SB_WORK/bad.json")" 400
expect "GET verify" "$(sb_curl -o /dev/null -w '%{http_code}' \
    "https://localhost:$SB_HTTPS_PORT/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=$SB_VERIFY&hub.challenge=7")" 200
expect "GET verify, wrong token" "$(sb_curl -o /dev/null -w '%{http_code}' \
    "https://localhost:$SB_HTTPS_PORT/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=no&hub.challenge=7")" 403
for path in /api/v1/conversations /api/v1/numbers "/api/v1/webhook-events?kind=account" \
            /api/v1/openapi.json; do
    expect "GET $path" "$(sb_get "$path")" 200
done
expect "GET /api/v1/nowhere" "$(sb_get /api/v1/nowhere)" 404

# Outbound: accepted by the simulator; refused (closed window); a token the simulator refuses.
template='{"number_id":"%s","to":"15550007777","type":"template","template":{"name":"hello_world","language":"en_US"}}'
# shellcheck disable=SC2059
expect "send a template" "$(sb_send "$(printf "$template" 100000000000001)")" 202
expect "send free-form outside the window" \
    "$(sb_send '{"number_id":"100000000000001","to":"15550008888","type":"text","text":"hi"}')" 422
curl -sS -o /dev/null -X POST "${SB_SIM_URL%/v*}/sim/numbers/100000000000002/expire-token"
# shellcheck disable=SC2059
expect "send with an expired token" "$(sb_send "$(printf "$template" 100000000000002)")" 202
metric() { curl -s "http://$SB_METRICS/metrics" | awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { print s + 0 }'; }
for _ in $(seq 200); do
    [[ $(metric 'switchboard_outbound_sends_total{result="accepted"}') -ge 1 &&
       $(metric 'switchboard_graph_errors_total{code="190"}') -ge 1 ]] && break
    sleep 0.1
done
[[ $(metric 'switchboard_graph_errors_total{code="190"}') -ge 1 ]] || sb_die "outbound sends not counted within 20 s"

# One timed checkpoint after the posts (the start-up one is the first).
for _ in $(seq 200); do
    count=$(curl -s "http://$SB_METRICS/metrics" | awk '$1 == "switchboard_checkpoint_seconds_count" { print $2 }')
    [[ ${count:-0} -ge 2 ]] && break
    sleep 0.1
done
[[ ${count:-0} -ge 2 ]] || sb_die "no timed checkpoint within 20 s"

curl -sS -o "$SB_WORK/metrics.txt" "http://$SB_METRICS/metrics"
families=$(grep -c '^# TYPE ' "$SB_WORK/metrics.txt" || true)
samples=$(grep -vc '^#' "$SB_WORK/metrics.txt" || true)
echo "metrics: $families families, $samples lines"
[[ $families -ge 30 ]] || sb_die "only $families metric families: the exercise did not run"

status=0
"$PROMTOOL_BIN" check metrics < "$SB_WORK/metrics.txt" > "$SB_WORK/promtool.out" 2>&1 || status=$?
if [[ $status != 0 || -s $SB_WORK/promtool.out ]]; then
    echo "promtool check metrics (exit $status):" >&2
    cat "$SB_WORK/promtool.out" >&2
    exit 1
fi
echo "promtool check metrics: clean"
