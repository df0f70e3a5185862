#!/usr/bin/env bash
# make demo: start `signet dev` (server + agent in one process), register two
# workloads, show them doing mutual TLS where each authorizes the other's
# SPIFFE ID, then show a third workload with the wrong ID being refused.
set -euo pipefail

BIN=$(realpath "${1:-bin/signet}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/signet-demo.XXXXXX)
chmod 755 "$WORK"
TD=example.org
AGENT_ID=spiffe://$TD/agent/dev
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
fail() {
	printf '\nDEMO FAILED: %s\n' "$*" >&2
	[ -f "$WORK/dev.log" ] && { echo "--- signet dev log:" >&2; tail -n 30 "$WORK/dev.log" >&2; }
	exit 1
}

say "Building the demo workload (a plain go-spiffe v2 program)"
(cd "$ROOT" && go build -o "$WORK/demo-server" ./examples/demo/peer)
# Same program, three paths: the agent tells them apart by executable path.
cp "$WORK/demo-server" "$WORK/demo-client"
cp "$WORK/demo-server" "$WORK/demo-intruder"

say "Starting signet dev: a server (CA of $TD) and an agent in one process"
SOCK=$WORK/sockets/agent.sock
ADMIN=$WORK/admin.sock
"$BIN" dev --data-dir "$WORK/dev" --socket "$SOCK" --admin-socket "$ADMIN" >"$WORK/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
	grep -q '^SPIFFE_ENDPOINT_SOCKET=' "$WORK/dev.log" && break
	kill -0 "${pids[0]}" 2>/dev/null || fail "signet dev exited"
	sleep 0.1
done
line=$(grep -m1 '^SPIFFE_ENDPOINT_SOCKET=' "$WORK/dev.log") || fail "signet dev did not become ready in 30s"
echo "signet dev is ready: $line"
export "${line?}"

register() {
	local id=$1 path=$2
	"$BIN" server entry create --admin-socket "$ADMIN" --parent-id "$AGENT_ID" \
		--spiffe-id "$id" --selector "unix:uid:$(id -u)" --selector "unix:path:$path" |
		grep -E '^(Entry ID|SPIFFE ID|Selector):' | sed 's/^/   /'
}
say "Registering the workloads (selectors: the uid and the executable path)"
register "spiffe://$TD/demo/server" "$WORK/demo-server"
register "spiffe://$TD/demo/client" "$WORK/demo-client"
register "spiffe://$TD/demo/intruder" "$WORK/demo-intruder"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
ADDR=127.0.0.1:$PORT

say "Starting the server workload; it accepts only spiffe://$TD/demo/client"
"$WORK/demo-server" serve --addr "$ADDR" --id "spiffe://$TD/demo/server" --allow "spiffe://$TD/demo/client" >"$WORK/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
	grep -q listening "$WORK/server.log" && break
	kill -0 "${pids[1]}" 2>/dev/null || { cat "$WORK/server.log"; fail "server workload exited"; }
	sleep 0.1
done
grep -q listening "$WORK/server.log" || fail "server workload did not start"
sed 's/^/   /' "$WORK/server.log"

say "The client workload connects; it accepts only spiffe://$TD/demo/server"
"$WORK/demo-client" dial --addr "$ADDR" --id "spiffe://$TD/demo/client" --server-id "spiffe://$TD/demo/server" 2>&1 | sed 's/^/   /'
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "the authorized client could not connect"

say "An intruder with a valid identity, but the wrong one, tries the same"
if "$WORK/demo-intruder" dial --addr "$ADDR" --id "spiffe://$TD/demo/intruder" --server-id "spiffe://$TD/demo/server" >"$WORK/intruder.log" 2>&1; then
	cat "$WORK/intruder.log"
	fail "the intruder was let in"
fi
sed 's/^/   /' "$WORK/intruder.log"
sleep 0.3
echo "   what the server saw:"
grep -E 'accepted|refused' "$WORK/server.log" | sed 's/^/     /'
grep -q 'refused' "$WORK/server.log" || fail "the server did not report refusing the intruder"

say "Summary"
cat <<MSG
   - signet dev issued short-lived X509-SVIDs to three workloads, attested from the kernel
     (uid and executable path); every private key was made on the node and never left it.
   - spiffe://$TD/demo/client and spiffe://$TD/demo/server completed mutual TLS, each
     checking the other's SPIFFE ID.
   - spiffe://$TD/demo/intruder holds a valid certificate from the same CA, yet the server
     refused it, because only spiffe://$TD/demo/client is authorized.
MSG
