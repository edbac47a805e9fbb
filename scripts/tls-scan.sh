#!/usr/bin/env bash
# Scan a running daemon's TLS with sslyze (an external scanner, pinned below) and fail unless:
#
# - TLS 1.2 and TLS 1.3 are accepted, and SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 are not;
# - every accepted TLS 1.2 suite has forward secrecy (ECDHE/DHE) and an AEAD cipher (AES-GCM,
#   ChaCha20-Poly1305), is not anonymous and has a key of at least 128 bits; no NULL, EXPORT,
#   RC4, DES/3DES, MD5 or CBC suite anywhere;
# - no key exchange group smaller than 255 bits (no secp160/192/224, no small DH);
# - no TLS compression (CRIME), no client-initiated renegotiation (DoS), and secure
#   renegotiation (RFC 5746) where renegotiation is at all possible; extended master secret
#   offered (RFC 7627);
# - not vulnerable to Heartbleed, OpenSSL CCS injection or ROBOT.
#
# Without a target it scans a throwaway daemon (scripts/lib/daemon.sh, generated certificate).
# TARGET=host:port scans a running deployment instead (TARGET_IP=a.b.c.d to skip DNS).
# The certificate itself is not judged here (the throwaway one is self-issued).
#
#   scripts/tls-scan.sh
#   TARGET=switchboard.example.com:8443 scripts/tls-scan.sh
#
# sslyze: $SSLYZE (a python with sslyze installed), else a venv in target/tools made with
# `python3 -m venv` (Debian: apt-get install python3-venv) and `pip install sslyze==$VERSION`.
set -euo pipefail
SSLYZE_VERSION=6.3.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -z ${TARGET:-} ]]; then
    # shellcheck source=lib/daemon.sh
    source "$ROOT/scripts/lib/daemon.sh"
    sb_start
    echo "daemon: pid $SB_PID, https $SB_HTTPS"
    TARGET=localhost:$SB_HTTPS_PORT
    TARGET_IP=127.0.0.1
    OUT_DIR=$SB_WORK
else
    OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-tls.XXXXXX")
    trap 'rm -rf "$OUT_DIR"' EXIT
fi

python=${SSLYZE:-}
if [[ -z $python ]]; then
    venv=${CARGO_TARGET_DIR:-$ROOT/target}/tools/sslyze-$SSLYZE_VERSION
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sslyze' 2>/dev/null; then
        echo "installing sslyze $SSLYZE_VERSION into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "sslyze==$SSLYZE_VERSION"
    fi
    python=$venv/bin/python
fi
echo "scanner: $("$python" -m sslyze --help | grep -m1 -o 'SSLyze version [0-9.]*')"

spec=$TARGET
[[ -n ${TARGET_IP:-} ]] && spec="$TARGET{$TARGET_IP}"
"$python" -m sslyze --quiet --json_out="$OUT_DIR/sslyze.json" --mozilla_config=disable \
    --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --elliptic_curves \
    --compression --reneg --ems --heartbleed --openssl_ccs --robot "$spec" > /dev/null

"$python" - "$OUT_DIR/sslyze.json" <<'PY'
import json, re, sys

report = json.load(open(sys.argv[1]))
server = report["server_scan_results"][0]
if server["scan_status"] != "COMPLETED":
    sys.exit(f"tls-scan: could not scan: {server.get('connectivity_error_trace') or server['scan_status']}")
results = server["scan_result"]
problems = []

def result(name):
    attempt = results[name]
    if attempt["status"] != "COMPLETED":
        problems.append(f"{name}: scan {attempt['status']}: {attempt.get('error_reason')}")
        return None
    return attempt["result"]

def suites(name):
    r = result(name)
    return [] if r is None else [s["cipher_suite"] for s in r["accepted_cipher_suites"]]

for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"]:
    names = [s["name"] for s in suites(f"{old}_cipher_suites")]
    print(f"{old}: {'REFUSED' if not names else 'ACCEPTED ' + ', '.join(names)}")
    if names:
        problems.append(f"{old} is accepted: {names}")

weak = re.compile(r"NULL|EXPORT|RC4|_DES_|3DES|MD5|_CBC_|anon", re.I)
for version in ["tls_1_2", "tls_1_3"]:
    accepted = suites(f"{version}_cipher_suites")
    print(f"{version}: {', '.join(s['name'] for s in accepted) or 'REFUSED'}")
    if not accepted:
        problems.append(f"{version} is not accepted")
    for s in accepted:
        n = s["name"]
        if weak.search(n) or s["is_anonymous"] or s["key_size"] < 128:
            problems.append(f"weak suite {n} ({s['key_size']}-bit)")
        if version == "tls_1_2" and not (
            re.match(r"TLS_(ECDHE|DHE)_", n) and re.search(r"_GCM_|CHACHA20_POLY1305", n)
        ):
            problems.append(f"TLS 1.2 suite is not ECDHE/DHE with AES-GCM or ChaCha20-Poly1305: {n}")
    r = result(f"{version}_cipher_suites")
    for s in (r or {}).get("accepted_cipher_suites", []):
        key = s.get("ephemeral_key") or {}
        if key.get("size") is not None and key["type_name"] == "ECDH" and key["size"] < 253:
            problems.append(f"{s['cipher_suite']['name']}: {key['size']}-bit ECDH key")
        if key.get("size") is not None and key["type_name"] == "DH" and key["size"] < 2048:
            problems.append(f"{s['cipher_suite']['name']}: {key['size']}-bit DH key")

curves = result("elliptic_curves")
if curves:
    names = [c["name"] for c in curves.get("supported_curves") or []]
    print(f"groups: {', '.join(names)}")
    for n in names:
        if re.search(r"(160|192|224)", n) or n.startswith("sect"):
            problems.append(f"weak key exchange group {n}")

comp = result("tls_compression")
if comp is not None:
    print(f"compression: {comp['supports_compression']}")
    if comp["supports_compression"]:
        problems.append("TLS compression is supported (CRIME)")
reneg = result("session_renegotiation")
if reneg is not None:
    print(f"client renegotiation DoS: {reneg['is_vulnerable_to_client_renegotiation_dos']}, "
          f"secure renegotiation: {reneg['supports_secure_renegotiation']}")
    if reneg["is_vulnerable_to_client_renegotiation_dos"]:
        problems.append("client-initiated renegotiation is accepted")
    if not reneg["supports_secure_renegotiation"]:
        problems.append("no secure renegotiation (RFC 5746)")
ems = result("tls_extended_master_secret")
if ems is not None:
    print(f"extended master secret: {ems['supports_ems_extension']}")
    if not ems["supports_ems_extension"]:
        problems.append("no extended master secret (RFC 7627)")
for name, key in [("heartbleed", "is_vulnerable_to_heartbleed"),
                  ("openssl_ccs_injection", "is_vulnerable_to_ccs_injection")]:
    r = result(name)
    if r is not None and r[key]:
        problems.append(f"vulnerable: {name}")
robot = result("robot")
if robot is not None:
    print(f"robot: {robot['robot_result']}")
    if robot["robot_result"].startswith("VULNERABLE"):
        problems.append(f"ROBOT: {robot['robot_result']}")

if problems:
    print("\nTLS scan FAILED:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("TLS scan: clean")
PY
