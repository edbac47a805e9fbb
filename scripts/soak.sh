#!/usr/bin/env bash
# Soak: the daemon under steady mixed traffic for a long time, against the Graph API
# simulator, sampling its RSS and open file descriptors; fails if RSS grows more than
# MAX_GROWTH_PCT after the warm-up.
#
#   scripts/soak.sh                              # 30 minutes at RATE inbound msgs/s
#   DURATION=5m WARMUP=1m scripts/soak.sh        # a short run
#
# Traffic, all at once:
#   - signed inbound webhooks from switchboard-load at RATE msgs/s (open loop) over CONNECTIONS;
#   - outbound: a batch of OUT_RATE templates every second through POST /api/v1/messages/batch,
#     sent by the daemon to switchboard-sim, which posts sent/delivered/read statuses back;
#   - the simulator's own inbound generator at SIM_INBOUND_RATE (Korean, Chinese, media,
#     replies, referrals).
# The issue asks for half the measured capacity; the journal keeps every message (~1.9 KB
# per message with its index), so RATE is also bounded by the disk: RATE x DURATION x 1.9 KB
# must fit. The script checks that before it starts.
#
# Parameters (environment): DURATION=30m WARMUP=5m RATE=2000 OUT_RATE=100 SIM_INBOUND_RATE=20
#   CONNECTIONS=32 NUMBERS=4 CUSTOMERS=10000 SAMPLE_EVERY=10 MAX_GROWTH_PCT=5 SKIP_BUILD=0
#   KEEP=0 OUT= (copy the samples CSV there)
set -euo pipefail

DURATION=${DURATION:-30m}
WARMUP=${WARMUP:-5m}
RATE=${RATE:-2000}
OUT_RATE=${OUT_RATE:-100}
SIM_INBOUND_RATE=${SIM_INBOUND_RATE:-20}
CONNECTIONS=${CONNECTIONS:-32}
NUMBERS=${NUMBERS:-4}
CUSTOMERS=${CUSTOMERS:-10000}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
MAX_GROWTH_PCT=${MAX_GROWTH_PCT:-5}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DAEMON=$TARGET_DIR/release/switchboard
LOAD=$TARGET_DIR/release/switchboard-load
SIM=$TARGET_DIR/release/switchboard-sim
SECRET=soak-app-secret-$$
TOKEN=soak-admin-token-$$

for tool in jq curl python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 2; }
done

seconds() { # 30m, 90s, 1h, or a plain number of seconds
    local v=$1
    case $v in
        *h) echo $((${v%h} * 3600)) ;;
        *m) echo $((${v%m} * 60)) ;;
        *s) echo "${v%s}" ;;
        *) echo "$v" ;;
    esac
}
DURATION_S=$(seconds "$DURATION")
WARMUP_S=$(seconds "$WARMUP")
((WARMUP_S < DURATION_S)) || { echo "soak: WARMUP must be shorter than DURATION" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-soak.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        echo "soak: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }

need_kb=$((RATE * DURATION_S * 19 / 10))
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
if ((need_kb > free_kb * 9 / 10)); then
    echo "soak: ~$((need_kb / 1048576)) GiB of journal and index needed, $((free_kb / 1048576)) GiB free on $WORK; lower RATE or DURATION" >&2
    exit 2
fi

say "machine"
echo "nproc:   $(nproc)"
echo "cpu:     $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"
echo "plan:    $DURATION at $RATE inbound/s + $OUT_RATE outbound/s + sim inbound $SIM_INBOUND_RATE/s; warm-up $WARMUP"

if [[ $SKIP_BUILD != 1 ]]; then
    say "build"
    (cd "$ROOT" && cargo build --release --bins)
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SIM_PORT=$(free_port)

wait_listening() { # pid stdout-file
    for _ in $(seq 300); do
        if grep -m1 '"event":"listening"' "$2" 2>/dev/null; then return 0; fi
        kill -0 "$1" 2>/dev/null || { echo "soak: a server exited before listening" >&2; return 1; }
        sleep 0.1
    done
    echo "soak: no listening line after 30 s" >&2
    return 1
}

# --- the daemon: NUMBERS numbers whose tokens the simulator knows ---------------------------
printf '%s' "$TOKEN" >"$WORK/admin.token"
{
    cat <<EOF
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "$WORK/data"
[metrics]
listen = "127.0.0.1:0"
[auth]
admin_token_file = "$WORK/admin.token"
[logging]
level = "warn"
[whatsapp]
graph_api_base = "http://127.0.0.1:$SIM_PORT/v23.0"
[[apps]]
name = "soak"
app_secret = "$SECRET"
verify_token = "soak"
EOF
    for i in $(seq "$NUMBERS"); do
        printf '[[numbers]]\nphone_number_id = "%s"\ndisplay_phone_number = "%s"\napp = "soak"\naccess_token = "tok-%s"\nmax_per_second = 80\n' \
            "$((100000000000000 + i))" "$((15550100000 + i))" "$i"
    done
} >"$WORK/switchboard.toml"

say "daemon"
"$DAEMON" serve --config "$WORK/switchboard.toml" >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
DAEMON_PID=$!
PIDS+=("$DAEMON_PID")
line=$(wait_listening "$DAEMON_PID" "$WORK/daemon.out")
HTTPS=$(jq -r .https <<<"$line")
CA=$(jq -r .ca <<<"$line")
[[ $CA == /* ]] || CA=$PWD/$CA
for _ in $(seq 600); do
    [[ $(curl -sk -o /dev/null -w '%{http_code}' "https://$HTTPS/readyz" || true) == 200 ]] && break
    sleep 0.1
done
echo "daemon pid $DAEMON_PID on https://$HTTPS"

# --- the simulator: same numbers and tokens, statuses posted to the daemon ------------------
{
    printf 'listen = "127.0.0.1:%s"\nseed = 7\nwindow = "reject"\nrecord_limit = 1000\n' "$SIM_PORT"
    for i in $(seq "$NUMBERS"); do
        printf '[[numbers]]\nphone_number_id = "%s"\ndisplay_phone_number = "%s"\ntoken = "tok-%s"\nmax_per_second = 80.0\n' \
            "$((100000000000000 + i))" "$((15550100000 + i))" "$i"
    done
    printf '[webhook]\nurl = "https://%s/webhooks/whatsapp"\nca = "%s"\nserver_name = "localhost"\napp_secret = "%s"\n' \
        "$HTTPS" "$CA" "$SECRET"
} >"$WORK/sim.toml"
say "simulator"
"$SIM" serve --config "$WORK/sim.toml" --inbound-rate "$SIM_INBOUND_RATE" >"$WORK/sim.out" 2>"$WORK/sim.err" &
PIDS+=("$!")
wait_listening "$!" "$WORK/sim.out"

# --- traffic ---------------------------------------------------------------------------------
NUMBER_ARGS=()
for i in $(seq "$NUMBERS"); do NUMBER_ARGS+=(--number "$((100000000000000 + i)):$((15550100000 + i))"); done
say "inbound load: $RATE msgs/s for $DURATION"
"$LOAD" run --target "$HTTPS" --ca "$CA" --server-name localhost --secret "$SECRET" \
    "${NUMBER_ARGS[@]}" --customers "$CUSTOMERS" --connections "$CONNECTIONS" \
    --rate "$RATE" --warmup 0s --duration "${DURATION_S}s" --json >"$WORK/load.json" 2>"$WORK/load.err" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")

outbound() { # one batch per second, to recipients that never repeat (no pair limit)
    local seq=0 i n body
    while true; do
        body='{"messages":['
        for ((i = 0; i < OUT_RATE; i++)); do
            n=$((seq % NUMBERS + 1))
            ((i > 0)) && body+=','
            body+="{\"number_id\":\"$((100000000000000 + n))\",\"to\":\"8277$(printf '%08d' "$seq")\",\"type\":\"template\",\"template\":{\"name\":\"soak\",\"language\":\"en_US\"}}"
            seq=$((seq + 1))
        done
        body+=']}'
        curl -s --cacert "$CA" --resolve "localhost:${HTTPS##*:}:127.0.0.1" -o /dev/null \
            -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
            --data-binary "$body" "https://localhost:${HTTPS##*:}/api/v1/messages/batch" || true
        sleep 1
    done
}
outbound &
PIDS+=("$!")

# --- samples -------------------------------------------------------------------------------
CSV=$WORK/samples.csv
echo "elapsed_s,rss_kib,fds,cpu_s" >"$CSV"
CLK_TCK=$(getconf CLK_TCK)
start=$SECONDS
say "sampling every ${SAMPLE_EVERY}s (elapsed_s,rss_kib,fds,cpu_s)"
while ((SECONDS - start < DURATION_S)); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "soak: the daemon died" >&2; tail -20 "$WORK/daemon.err" >&2; exit 1; }
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$DAEMON_PID/status")
    fds=$(find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    cpu=$(awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / t }' "/proc/$DAEMON_PID/stat")
    echo "$((SECONDS - start)),$rss,$fds,$cpu" | tee -a "$CSV"
    sleep "$SAMPLE_EVERY"
done
wait "$LOAD_PID" || true
[[ -n $OUT ]] && cp "$CSV" "$OUT"

say "result"
jq -c '{acknowledged: .acknowledged_messages, msgs_per_s: .msgs_per_s, status_503: .status_503,
    other: .status_other, transport_errors: .transport_errors, unsent: .unsent,
    p50_ms: (.latency_us.p50 / 1000), p99_ms: (.latency_us.p99 / 1000)}' "$WORK/load.json" 2>/dev/null || cat "$WORK/load.json"
curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | jq -c '{accepted: [.numbers[].accepted] | add, throttled: [.numbers[].throttled] | add, webhooks: .webhooks}' || true
python3 - "$CSV" "$WARMUP_S" "$MAX_GROWTH_PCT" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
warm, limit = int(sys.argv[2]), float(sys.argv[3])
after = [r for r in rows if int(r["elapsed_s"]) >= warm]
if not after:
    sys.exit("soak: no samples after the warm-up")
base = int(after[0]["rss_kib"])
peak = max(int(r["rss_kib"]) for r in after)
last = int(after[-1]["rss_kib"])
fds = [int(r["fds"]) for r in after]
growth = (peak - base) * 100.0 / base
print(f"RSS at {after[0]['elapsed_s']} s: {base / 1024:.1f} MiB; peak after: {peak / 1024:.1f} MiB; "
      f"last: {last / 1024:.1f} MiB; growth {growth:+.1f}% (limit {limit}%)")
print(f"fds after the warm-up: min {min(fds)}, max {max(fds)}, last {fds[-1]}")
sys.exit(0 if growth <= limit else 1)
EOF
