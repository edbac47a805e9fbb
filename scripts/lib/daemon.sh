# shellcheck shell=bash
# Sourced by the check scripts: a throwaway daemon on 127.0.0.1 with ephemeral ports, a
# temporary data directory and a generated certificate, stopped (by its pid only) on exit.
#
#   sb_start                 start it; sets SB_WORK SB_PID SB_HTTPS SB_HTTPS_PORT SB_METRICS SB_CA
#                            (SB_SIM=1 first starts switchboard-sim, a Graph API simulator that
#                            knows both numbers, and points the daemon's [whatsapp] at it;
#                            sets SB_SIM_PID SB_SIM_URL)
#   sb_send JSON             POST JSON to /api/v1/messages with the admin token, print the status
#   sb_post FILE [SECRET]    POST FILE to /webhooks/whatsapp signed with SECRET (default: the
#                            app's), print the HTTP status
#   sb_get PATH              GET PATH on the HTTPS listener with the admin token, print the status
#   sb_curl ARGS...          curl against the HTTPS listener (CA and name pinned)
#
# Environment: SWITCHBOARD_BIN (default: `cargo build --bins`, then target/debug; the
# simulator is taken from beside it),
# KEEP=1 keeps the work directory. Needs curl and openssl.

SB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SB_SECRET=check-app-secret
SB_VERIFY=check-verify-token
SB_TOKEN=swb_check_admin_token_0123456789abcdef
SB_WORK=
SB_PID=
SB_SIM_PID=
SB_SIM_URL=

sb_die() { echo "${0##*/}: $*" >&2; exit 1; }

for _tool in curl openssl; do
    command -v "$_tool" >/dev/null || sb_die "$_tool is required"
done

sb_binary() {
    if [[ -n ${SWITCHBOARD_BIN:-} ]]; then
        [[ -x $SWITCHBOARD_BIN ]] || sb_die "SWITCHBOARD_BIN=$SWITCHBOARD_BIN is not executable"
        realpath "$SWITCHBOARD_BIN"
        return
    fi
    (cd "$SB_ROOT" && cargo build --quiet --bin switchboard --bin switchboard-sim >&2) \
        || sb_die "cargo build failed"
    echo "${CARGO_TARGET_DIR:-$SB_ROOT/target}/debug/switchboard"
}

sb_stop() { # pid: SIGTERM, up to 10 s, then SIGKILL
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}

sb_cleanup() {
    local status=$?
    sb_stop "$SB_PID"
    sb_stop "$SB_SIM_PID"
    if [[ -n $SB_WORK ]]; then
        if [[ ${KEEP:-0} == 1 || $status != 0 ]]; then
            echo "${0##*/}: work directory kept: $SB_WORK (daemon.log inside)" >&2
        else
            rm -rf "$SB_WORK"
        fi
    fi
    exit "$status"
}
trap sb_cleanup EXIT
trap 'exit 130' INT TERM

# The "listening" JSON line a child prints on stdout ($1: its stdout file, $2: its pid).
sb_listening() {
    local line
    for _ in $(seq 600); do
        line=$(grep -m1 '"event":"listening"' "$1" 2>/dev/null || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        kill -0 "$2" 2>/dev/null || { tail -20 "$SB_WORK"/*.log >&2; sb_die "pid $2 exited"; }
        sleep 0.1
    done
    sb_die "no listening line from pid $2 after 60 s"
}

sb_start_sim() { # bin dir
    local line
    cat > "$SB_WORK/sim.toml" <<TOML
seed = 5
window = "reject"
[[numbers]]
phone_number_id = "100000000000001"
display_phone_number = "15550100001"
token = "check-token-1"
[[numbers]]
phone_number_id = "100000000000002"
display_phone_number = "15550100002"
token = "check-token-2"
TOML
    [[ -x $1/switchboard-sim ]] || sb_die "no $1/switchboard-sim (cargo build --bin switchboard-sim)"
    "$1/switchboard-sim" serve --config "$SB_WORK/sim.toml" > "$SB_WORK/sim.stdout" 2> "$SB_WORK/sim.log" &
    SB_SIM_PID=$!
    line=$(sb_listening "$SB_WORK/sim.stdout" "$SB_SIM_PID")
    SB_SIM_URL=$(sed -E 's/.*"base_url":"([^"]+)".*/\1/' <<<"$line")
}

sb_start() {
    local bin line token1= token2= whatsapp=
    bin=$(sb_binary)
    SB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-check.XXXXXX")
    printf '%s' "$SB_TOKEN" > "$SB_WORK/admin.token"
    if [[ ${SB_SIM:-0} == 1 ]]; then
        sb_start_sim "$(dirname "$bin")"
        token1='access_token = "check-token-1"'
        token2='access_token = "check-token-2"'
        whatsapp=$(printf '[whatsapp]\ngraph_api_base = "%s"' "$SB_SIM_URL")
    fi
    cat > "$SB_WORK/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
[storage]
data_dir = "data"
checkpoint_interval = "200ms"
[pipeline]
pin_threads = false
[metrics]
listen = "127.0.0.1:0"
[auth]
admin_token_file = "admin.token"
[[apps]]
name = "main"
app_secret = "$SB_SECRET"
verify_token = "$SB_VERIFY"
[[numbers]]
phone_number_id = "100000000000001"
display_phone_number = "15550100001"
app = "main"
$token1
[[numbers]]
phone_number_id = "100000000000002"
display_phone_number = "15550100002"
app = "main"
$token2
$whatsapp
TOML
    (cd "$SB_WORK" && exec "$bin" serve --config switchboard.toml) \
        > "$SB_WORK/stdout" 2> "$SB_WORK/daemon.log" &
    SB_PID=$!
    line=$(sb_listening "$SB_WORK/stdout" "$SB_PID")
    SB_HTTPS=$(sed -E 's/.*"https":"([^"]+)".*/\1/' <<<"$line")
    SB_HTTPS_PORT=${SB_HTTPS##*:}
    SB_METRICS=$(sed -E 's/.*"metrics":"([^"]+)".*/\1/' <<<"$line")
    SB_CA=$SB_WORK/$(sed -E 's/.*"ca":"([^"]+)".*/\1/' <<<"$line")
    for _ in $(seq 600); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$SB_METRICS/readyz") == 200 ]] && return 0
        kill -0 "$SB_PID" 2>/dev/null || { tail -20 "$SB_WORK/daemon.log" >&2; sb_die "the daemon exited"; }
        sleep 0.1
    done
    sb_die "not ready after 60 s"
}

sb_curl() {
    curl -sS --cacert "$SB_CA" --resolve "localhost:$SB_HTTPS_PORT:127.0.0.1" "$@"
}

sb_post() { # file [secret]
    local sig
    sig=$(openssl dgst -sha256 -hmac "${2:-$SB_SECRET}" < "$1" | awk '{ print $NF }')
    sb_curl -o /dev/null -w '%{http_code}' -H "x-hub-signature-256: sha256=$sig" \
        -H 'content-type: application/json' --data-binary "@$1" \
        "https://localhost:$SB_HTTPS_PORT/webhooks/whatsapp"
}

sb_get() { # path
    sb_curl -o /dev/null -w '%{http_code}' -H "authorization: Bearer $SB_TOKEN" \
        "https://localhost:$SB_HTTPS_PORT$1"
}

sb_send() { # json
    sb_curl -o /dev/null -w '%{http_code}' -H "authorization: Bearer $SB_TOKEN" \
        -H 'content-type: application/json' --data-binary "$1" \
        "https://localhost:$SB_HTTPS_PORT/api/v1/messages"
}
