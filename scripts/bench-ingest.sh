#!/usr/bin/env bash
# Ingest benchmark: the daemon against a bare hyper+rustls server answering 200, on the same
# machine in the same run, with switchboard-load as the client.
#
#   scripts/bench-ingest.sh                      # closed loop, open loop at $RATE, bare baseline
#   MESSAGES=1000000 scripts/bench-ingest.sh     # ingest that many messages, then read RSS
#
# Parameters (environment):
#   CONNECTIONS=64   DURATION=20s  WARMUP=5s      closed-loop runs (daemon and bare)
#   RATE=10000 (or auto: 70% of the daemon's closed-loop msgs/s)   OPEN_CONNECTIONS=$CONNECTIONS OPEN_DURATION=$DURATION   open-loop run
#   SHARDS=0 (one per core)  NUMBERS=4  CUSTOMERS=10000  BODY_BYTES= (empty: realistic bodies)
#   MESSAGES_PER_POST=1  HTTP2=0  LOAD_THREADS= (load generator runtime threads; default cores)
#   MESSAGES=0 (>0: fixed-work mode)  SKIP_BUILD=0  KEEP=0 (keep the work directory)
#   SLED_CACHE_BYTES= (empty: the daemon's default storage.sled_cache_bytes)
#   OUT= (copy the results JSON there)
#
# The load generator runs on the same cores as the daemon and competes with it for CPU; the
# bare baseline pays the same tax, which is why the ratio is the figure to compare.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
RATE=${RATE:-10000}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-$CONNECTIONS}
OPEN_DURATION=${OPEN_DURATION:-$DURATION}
SHARDS=${SHARDS:-0}
NUMBERS=${NUMBERS:-4}
CUSTOMERS=${CUSTOMERS:-10000}
BODY_BYTES=${BODY_BYTES:-}
MESSAGES_PER_POST=${MESSAGES_PER_POST:-1}
HTTP2=${HTTP2:-0}
LOAD_THREADS=${LOAD_THREADS:-}
MESSAGES=${MESSAGES:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-}
SLED_CACHE_BYTES=${SLED_CACHE_BYTES:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DAEMON=$TARGET_DIR/release/switchboard
LOAD=$TARGET_DIR/release/switchboard-load
SECRET=bench-app-secret-$$
CLK_TCK=$(getconf CLK_TCK)

for tool in jq curl; do
    command -v "$tool" >/dev/null || { echo "bench-ingest: $tool is required" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-bench.XXXXXX")
DAEMON_PID=
BARE_PID=

# Stop whatever we started (by pid only) and remove the work directory.
cleanup() {
    local status=$?
    for pid in $DAEMON_PID $BARE_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ $KEEP == 1 ]]; then
        echo "bench-ingest: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
# Print a command exactly (shell-quoted); `run` also runs it.
show() { printf '$'; printf ' %q' "$@"; printf '\n'; }
run() { show "$@"; "$@"; }

cpu_ticks() { # user+system ticks of a pid
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

# Wait for the {"event":"listening",...} line a server prints on stdout.
wait_listening() { # pid stdout-file stderr-file
    local line=
    for _ in $(seq 300); do
        line=$(grep -m1 '"event":"listening"' "$2" 2>/dev/null || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        if ! kill -0 "$1" 2>/dev/null; then
            echo "bench-ingest: server exited before listening:" >&2
            tail -20 "$3" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "bench-ingest: no listening line after 30 s" >&2
    return 1
}

stop() { # pid name: SIGTERM, wait, insist on exit 0
    local rc=0
    kill -TERM "$1"
    wait "$1" || rc=$?
    if [[ $rc != 0 ]]; then
        echo "bench-ingest: $2 exited with status $rc" >&2
        return 1
    fi
    echo "$2 stopped cleanly (exit 0)"
}

say "machine"
echo "nproc:   $(nproc)"
echo "cpu:     $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:  $(uname -r)"
echo "fs:      $(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }') ($WORK)"
echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"

if [[ $SKIP_BUILD != 1 ]]; then
    say "build"
    (cd "$ROOT" && run cargo build --release --bins)
fi

# ---------------------------------------------------------------------------------------
# Config: one app with a known secret, $NUMBERS numbers, ports chosen by the kernel.
mkdir -p "$WORK/data"
printf '%s' "$SECRET" >"$WORK/app_secret"
printf 'bench-admin-token-%s' "$$" >"$WORK/admin.token"
chmod 600 "$WORK/app_secret" "$WORK/admin.token"
NUMBER_ARGS=()
{
    cat <<EOF
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "$WORK/data"
${SLED_CACHE_BYTES:+sled_cache_bytes = $SLED_CACHE_BYTES}

[pipeline]
shards = $SHARDS

[metrics]
listen = "127.0.0.1:0"

[auth]
admin_token_file = "$WORK/admin.token"

[logging]
level = "warn"

[[apps]]
name = "bench"
app_secret_file = "$WORK/app_secret"
verify_token = "bench-verify-token"
EOF
    for i in $(seq "$NUMBERS"); do
        id=$((100000000000000 + i))
        display=$((15550100000 + i))
        printf '\n[[numbers]]\nphone_number_id = "%s"\ndisplay_phone_number = "%s"\napp = "bench"\nwaba_id = "900000000000001"\n' "$id" "$display"
    done
} >"$WORK/switchboard.toml"
for i in $(seq "$NUMBERS"); do
    NUMBER_ARGS+=(--number "$((100000000000000 + i)):$((15550100000 + i))")
done

LOAD_GLOBAL=()
[[ -n $LOAD_THREADS ]] && LOAD_GLOBAL+=(--threads "$LOAD_THREADS")
PAYLOAD_ARGS=(--secret "$SECRET" "${NUMBER_ARGS[@]}" --customers "$CUSTOMERS"
    --messages-per-post "$MESSAGES_PER_POST")
[[ -n $BODY_BYTES ]] && PAYLOAD_ARGS+=(--body-bytes "$BODY_BYTES")
[[ $HTTP2 == 1 ]] && PAYLOAD_ARGS+=(--http2)

start_daemon() {
    say "daemon"
    echo "config: $WORK/switchboard.toml"
    # Started directly (not through `run`) so that $! is the daemon itself.
    show "$DAEMON" serve --config "$WORK/switchboard.toml"
    "$DAEMON" serve --config "$WORK/switchboard.toml" >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
    DAEMON_PID=$!
    local line
    line=$(wait_listening "$DAEMON_PID" "$WORK/daemon.out" "$WORK/daemon.err")
    echo "$line"
    DAEMON_HTTPS=$(jq -r .https <<<"$line")
    DAEMON_METRICS=$(jq -r .metrics <<<"$line")
    DAEMON_CA=$(jq -r .ca <<<"$line")
    # The ca path may be relative to the daemon's working directory (ours).
    [[ $DAEMON_CA == /* ]] || DAEMON_CA=$PWD/$DAEMON_CA
    local code=
    for _ in $(seq 600); do
        code=$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://$DAEMON_HTTPS/readyz" || true)
        [[ $code == 200 ]] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -20 "$WORK/daemon.err" >&2; exit 1; }
        sleep 0.1
    done
    [[ $code == 200 ]] || { echo "bench-ingest: /readyz never answered 200 (last: $code)" >&2; exit 1; }
    echo "ready: https://$DAEMON_HTTPS/readyz 200; pid $DAEMON_PID; RSS $(rss_kib "$DAEMON_PID" VmRSS) KiB"
}

# load <name> <target> <ca> <pid of the server> <args...>: runs switchboard-load, saves its
# JSON report as $WORK/<name>.json with the server's CPU use during the run added.
load() {
    local name=$1 target=$2 ca=$3 pid=$4
    shift 4
    local t0 t1 w0 w1 rc=0 lu lsys le lm
    t0=$(cpu_ticks "$pid")
    w0=$(date +%s.%N)
    local cmd=("$LOAD" "${LOAD_GLOBAL[@]}" run --target "$target" --ca "$ca" "${PAYLOAD_ARGS[@]}" "$@" --json)
    show "${cmd[@]}"
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -o "$WORK/$name.time" -f '%U %S %e %M' "${cmd[@]}" >"$WORK/$name.raw" || rc=$?
    else
        "${cmd[@]}" >"$WORK/$name.raw" || rc=$?
        echo "0 0 0 0" >"$WORK/$name.time"
    fi
    w1=$(date +%s.%N)
    t1=$(cpu_ticks "$pid")
    if [[ ! -s $WORK/$name.raw ]]; then
        echo "bench-ingest: switchboard-load failed (status $rc)" >&2
        exit 1
    fi
    [[ $rc == 0 ]] || echo "bench-ingest: switchboard-load exited with status $rc (no 200s?)" >&2
    # time(1) prepends a line when the command failed: the figures are on the last line.
    read -r lu lsys le lm < <(tail -1 "$WORK/$name.time")
    jq --argjson ticks "$((t1 - t0))" --argjson hz "$CLK_TCK" \
        --argjson wall "$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')" \
        --argjson lu "$lu" --argjson ls "$lsys" --argjson le "$le" --argjson lm "$lm" \
        '. + { server_cpu_percent_of_one_core: ((($ticks / $hz) / $wall * 1000 | round) / 10),
               generator_process: { user_s: $lu, system_s: $ls, wall_s: $le, max_rss_kib: $lm,
                                    cpu_percent_of_one_core: (if $le > 0 then (($lu + $ls) / $le * 1000 | round) / 10 else null end) } }' \
        "$WORK/$name.raw" >"$WORK/$name.json"
    jq -r '"  \(.acknowledged_messages) messages acknowledged in \(.duration_s) s: \(.msgs_per_s) msgs/s; latency p50 \(.latency_us.p50) µs, p90 \(.latency_us.p90) µs, p99 \(.latency_us.p99) µs, p99.9 \(.latency_us.p999) µs, max \(.latency_us.max) µs",
           "  errors: 503 \(.status_503), other \(.status_other), transport \(.transport_errors); unsent \(.unsent)",
           "  server cpu \(.server_cpu_percent_of_one_core)% of one core; generator cpu \(.cpu.percent_of_one_core)% (window), \(.generator_process.cpu_percent_of_one_core)% (whole process, max RSS \(.generator_process.max_rss_kib) KiB)"' \
        "$WORK/$name.json"
}

messages_archived() {
    curl -s --max-time 5 "http://$DAEMON_METRICS/metrics" |
        awk '/^switchboard_messages_total/ { s += $NF } END { printf "%d\n", s }'
}

disk_bytes() { du -sb "$WORK/data" | cut -f1; }

# ---------------------------------------------------------------------------------------
if [[ $MESSAGES -gt 0 ]]; then
    start_daemon
    say "fixed work: $MESSAGES messages, closed loop, $CONNECTIONS connections"
    load fixed "$DAEMON_HTTPS" "$DAEMON_CA" "$DAEMON_PID" \
        --connections "$CONNECTIONS" --duration 2h --warmup 0s --max-messages "$MESSAGES"
    sleep 1
    ARCHIVED=$(messages_archived)
    RSS=$(rss_kib "$DAEMON_PID" VmRSS)
    HWM=$(rss_kib "$DAEMON_PID" VmHWM)
    DISK_RUNNING=$(disk_bytes)
    say "stop"
    stop "$DAEMON_PID" daemon
    DAEMON_PID=
    DISK_STOPPED=$(disk_bytes)
    jq -n --slurpfile fixed "$WORK/fixed.json" --argjson archived "$ARCHIVED" \
        --argjson rss "$RSS" --argjson hwm "$HWM" \
        --argjson disk_running "$DISK_RUNNING" --argjson disk_stopped "$DISK_STOPPED" \
        '{ mode: "fixed_work", fixed: $fixed[0], messages_archived: $archived,
           daemon_rss_kib: $rss, daemon_peak_rss_kib: $hwm,
           disk_bytes_running: $disk_running, disk_bytes_stopped: $disk_stopped,
           disk_bytes_per_message_running: (if $archived > 0 then ($disk_running / $archived | round) else null end),
           disk_bytes_per_message_stopped: (if $archived > 0 then ($disk_stopped / $archived | round) else null end) }' \
        >"$WORK/results.json"
    say "results"
    jq -r '"messages archived      \(.messages_archived)",
           "throughput             \(.fixed.msgs_per_s) msgs/s over \(.fixed.duration_s) s",
           "latency p50 / p99      \(.fixed.latency_us.p50) / \(.fixed.latency_us.p99) µs",
           "daemon RSS (peak)      \(.daemon_rss_kib / 1024 | floor) MiB (\(.daemon_peak_rss_kib / 1024 | floor) MiB)",
           "disk bytes/message     \(.disk_bytes_per_message_running) running, \(.disk_bytes_per_message_stopped) after a clean stop"' \
        "$WORK/results.json"
    [[ -n $OUT ]] && cp "$WORK/results.json" "$OUT"
    exit 0
fi

start_daemon
say "daemon, closed loop: $CONNECTIONS connections, $DURATION after $WARMUP warm-up"
load daemon_closed "$DAEMON_HTTPS" "$DAEMON_CA" "$DAEMON_PID" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP"
RSS_AFTER_CLOSED=$(rss_kib "$DAEMON_PID" VmRSS)

if [[ $RATE == auto ]]; then
    RATE=$(jq '.msgs_per_s * 0.7 | floor' "$WORK/daemon_closed.json")
fi
say "daemon, open loop: $RATE msgs/s over $OPEN_CONNECTIONS connections, $OPEN_DURATION after $WARMUP warm-up"
load daemon_open "$DAEMON_HTTPS" "$DAEMON_CA" "$DAEMON_PID" \
    --connections "$OPEN_CONNECTIONS" --duration "$OPEN_DURATION" --warmup "$WARMUP" --rate "$RATE"

sleep 1
ARCHIVED=$(messages_archived)
RSS=$(rss_kib "$DAEMON_PID" VmRSS)
HWM=$(rss_kib "$DAEMON_PID" VmHWM)
DISK_RUNNING=$(disk_bytes)
say "stop daemon"
stop "$DAEMON_PID" daemon
DAEMON_PID=
DISK_STOPPED=$(disk_bytes)

say "bare hyper+rustls server answering 200"
show "$LOAD" "${LOAD_GLOBAL[@]}" bare --listen 127.0.0.1:0 --cert-dir "$WORK/bare"
"$LOAD" "${LOAD_GLOBAL[@]}" bare --listen 127.0.0.1:0 --cert-dir "$WORK/bare" \
    >"$WORK/bare.out" 2>"$WORK/bare.err" &
BARE_PID=$!
LINE=$(wait_listening "$BARE_PID" "$WORK/bare.out" "$WORK/bare.err")
echo "$LINE"
BARE_HTTPS=$(jq -r .https <<<"$LINE")
BARE_CA=$(jq -r .ca <<<"$LINE")
say "bare, closed loop: $CONNECTIONS connections, $DURATION after $WARMUP warm-up"
load bare_closed "$BARE_HTTPS" "$BARE_CA" "$BARE_PID" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP"
say "stop bare server"
stop "$BARE_PID" "bare server"
BARE_PID=

jq -n --slurpfile closed "$WORK/daemon_closed.json" --slurpfile open "$WORK/daemon_open.json" \
    --slurpfile bare "$WORK/bare_closed.json" --argjson archived "$ARCHIVED" \
    --argjson rss_closed "$RSS_AFTER_CLOSED" --argjson rss "$RSS" --argjson hwm "$HWM" \
    --argjson disk_running "$DISK_RUNNING" --argjson disk_stopped "$DISK_STOPPED" \
    '{ mode: "compare", daemon_closed: $closed[0], daemon_open: $open[0], bare_closed: $bare[0],
       ratio_daemon_to_bare: (if $bare[0].msgs_per_s > 0 then ($closed[0].msgs_per_s / $bare[0].msgs_per_s * 1000 | round) / 1000 else null end),
       messages_archived: $archived,
       daemon_rss_kib_after_closed: $rss_closed, daemon_rss_kib: $rss, daemon_peak_rss_kib: $hwm,
       disk_bytes_running: $disk_running, disk_bytes_stopped: $disk_stopped,
       disk_bytes_per_message_running: (if $archived > 0 then ($disk_running / $archived | round) else null end),
       disk_bytes_per_message_stopped: (if $archived > 0 then ($disk_stopped / $archived | round) else null end) }' \
    >"$WORK/results.json"

say "results"
jq -r '"closed loop, msgs/s     daemon \(.daemon_closed.msgs_per_s)   bare \(.bare_closed.msgs_per_s)   ratio \(.ratio_daemon_to_bare)",
       "closed loop, p50/p99   daemon \(.daemon_closed.latency_us.p50)/\(.daemon_closed.latency_us.p99) µs   bare \(.bare_closed.latency_us.p50)/\(.bare_closed.latency_us.p99) µs",
       "open loop \(.daemon_open.rate_target) msgs/s   achieved \(.daemon_open.msgs_per_s); p50 \(.daemon_open.latency_us.p50) µs, p99 \(.daemon_open.latency_us.p99) µs, p99.9 \(.daemon_open.latency_us.p999) µs; unsent \(.daemon_open.unsent)",
       "errors                 closed \(.daemon_closed.status_503 + ([.daemon_closed.status_other[]] | add // 0) + ([.daemon_closed.transport_errors[]] | add // 0)), open \(.daemon_open.status_503 + ([.daemon_open.status_other[]] | add // 0) + ([.daemon_open.transport_errors[]] | add // 0))",
       "cpu (% of one core)    daemon \(.daemon_closed.server_cpu_percent_of_one_core), its generator \(.daemon_closed.cpu.percent_of_one_core); bare \(.bare_closed.server_cpu_percent_of_one_core), its generator \(.bare_closed.cpu.percent_of_one_core)",
       "messages archived      \(.messages_archived)",
       "daemon RSS             \(.daemon_rss_kib / 1024 | floor) MiB now, \(.daemon_peak_rss_kib / 1024 | floor) MiB peak",
       "disk bytes/message     \(.disk_bytes_per_message_running) running, \(.disk_bytes_per_message_stopped) after a clean stop"' \
    "$WORK/results.json"
echo "results JSON: $WORK/results.json$([[ $KEEP == 1 ]] || echo ' (removed at exit; set KEEP=1 or OUT=file)')"
[[ -n $OUT ]] && cp "$WORK/results.json" "$OUT"
exit 0
