#!/usr/bin/env bash
# Load benchmark: brokered logins (authorize → upstream → callback → token) and single sign-on
# logins (authorize answered from the browser's broker session → token) against `broker serve`
# with a private Redis, at several concurrency levels, for ES256 and RS256 broker ID tokens.
# Prints logins/s, p50/p95/p99 latency, broker CPU ms per login and RSS, and per level the
# single sign-on login's broker CPU as a fraction of the full login's. Loopback only; every
# process it starts is stopped on exit.
#
# Environment (defaults):
#   LOGINS=2000         measured logins per run          WARMUP=200   warm-up logins per run
#   LEVELS="1 8 32"     concurrency levels               REPEAT=3     runs per level (medians)
#   ALGS="ES256 RS256"  broker ID-token algs             MAX_DURATION=120s  cap per run
#   MODES="full sso"    per run, in this order (alternating when REPEAT > 1), against the same
#                       broker and Redis: full = a brokered login in a fresh browser; sso = each
#                       worker's browser signs in once (not measured), then every login is
#                       answered from its broker session. With both, the summary prints
#                       SSO CPU/login ÷ full CPU/login per level (medians) against 1/3
#   SSO_LOGINS=5×LOGINS measured logins per sso run: SSO logins run 2–3× faster than full
#                       ones, and a run of 2000 lasts under a second, where the 10 ms CPU ticks
#                       and the run's start and end weigh too much
#   IDP_SUBJECTS=unique the upstream's users: unique (each login another user, as on a real
#                       site) | shared (alice in every login: one user's session index is then
#                       rewritten by every login, and past 100 sessions each login ends one)
#   NONCE_MODE=first    upstream nonce: first (challenge when the proof lacks a current nonce)
#                       | every (challenge the first token request of every login)
#   IDP_ID_TOKEN_ALG=ES256  the upstream's ID-token alg (ES256 | RS256). The upstream shares this
#                       machine's cores with the broker; ES256 keeps its own signing cheap (an
#                       RS256 upstream spends ~0.8 ms/login signing, which a real IdP does elsewhere)
#   BROKER_BIN=         use this broker binary instead of building ./cmd/broker
#   RSS_EVERY=0         e.g. 10s: print the broker's RSS during each run
#   PROFILE=0           1 runs the broker as bench/brokerprof (same wiring as serve, plus a CPU
#                       profile of the whole run) and prints the top 15 functions per alg; the
#                       allocation profile is written too (mem-ALG.pprof, see KEEP)
#   BROKERPROF_BIN=     use this brokerprof binary instead of building ./bench/brokerprof
#   KEEP=0              1 keeps the work directory (configs, logs, results.jsonl)
#   FLOOR=1             also measure the stack floor at each level: broker CPU per bare /healthz
#                       (HTTP only) and /readyz (HTTP + one Redis PING), 5000 requests each
#   BROKER_ENV=         extra environment for the broker only, e.g. "GOMAXPROCS=1 GOGC=200"
set -euo pipefail

LOGINS=${LOGINS:-2000}
WARMUP=${WARMUP:-200}
LEVELS=${LEVELS:-"1 8 32"}
REPEAT=${REPEAT:-3}
ALGS=${ALGS:-"ES256 RS256"}
MAX_DURATION=${MAX_DURATION:-120s}
NONCE_MODE=${NONCE_MODE:-first}
IDP_ID_TOKEN_ALG=${IDP_ID_TOKEN_ALG:-ES256}
MODES=${MODES:-"full sso"}
SSO_LOGINS=${SSO_LOGINS:-$((LOGINS * 5))}
IDP_SUBJECTS=${IDP_SUBJECTS:-unique}
RSS_EVERY=${RSS_EVERY:-0}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-0}
FLOOR=${FLOOR:-1}
read -r -a BROKER_ENV_ARGS <<<"${BROKER_ENV:-}"
BROKER_RUN=(env "${BROKER_ENV_ARGS[@]}")

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dpop-bench.XXXXXX")
PIDS=()

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [[ $KEEP == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
	exit "$rc"
}
trap cleanup EXIT INT TERM

# wait_for CMD...: retry CMD up to 100 times, 0.1 s apart.
wait_for() {
	for _ in $(seq 1 100); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for: $*" >&2
	return 1
}

command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli not found (apt-get install redis-tools)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== building" >&2
(cd "$ROOT" && go build -o "$WORK/loadgen" ./bench/loadgen)
if [[ -n ${BROKER_BIN:-} ]]; then
	cp "$BROKER_BIN" "$WORK/broker"
else
	(cd "$ROOT" && go build -o "$WORK/broker" ./cmd/broker)
fi
if [[ $PROFILE == 1 ]]; then
	if [[ -n ${BROKERPROF_BIN:-} ]]; then
		cp "$BROKERPROF_BIN" "$WORK/brokerprof"
	else
		(cd "$ROOT" && go build -o "$WORK/brokerprof" ./bench/brokerprof)
	fi
fi

PORTS=$("$WORK/loadgen" -free-ports 3 | tr '\n' ' ')
read -r REDIS_PORT BROKER_PORT APP_PORT <<<"$PORTS"

echo "== redis-server on 127.0.0.1:$REDIS_PORT" >&2
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
	--daemonize no --protected-mode yes >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping

echo "== fast upstream IdP (nonce mode $NONCE_MODE, subjects $IDP_SUBJECTS)" >&2
"$WORK/loadgen" -serve-idp 127.0.0.1:0 -idp-url-file "$WORK/idp.url" -idp-nonce "$NONCE_MODE" -idp-id-token-alg "$IDP_ID_TOKEN_ALG" \
	-idp-subjects "$IDP_SUBJECTS" -idp-client-id broker -idp-client-secret bench-upstream-secret >"$WORK/idp.log" 2>&1 &
IDP_PID=$!
PIDS+=("$IDP_PID")
wait_for test -s "$WORK/idp.url"
IDP_URL=$(head -n1 "$WORK/idp.url")

"$WORK/broker" keys generate --alg ES256 >"$WORK/dpop-es256.pem" 2>/dev/null
"$WORK/broker" keys generate --alg ES256 >"$WORK/sign-ES256.pem" 2>/dev/null
"$WORK/broker" keys generate --alg RS256 >"$WORK/sign-RS256.pem" 2>/dev/null
chmod 600 "$WORK"/*.pem

RETRY_DELAY=100ms
JITTER=100ms
if [[ $NONCE_MODE == every ]]; then RETRY_DELAY=0s; JITTER=0s; fi

BROKER="http://127.0.0.1:$BROKER_PORT"
REDIRECT="http://127.0.0.1:$APP_PORT/callback"
CLIENT_SECRET="bench-app-secret-0123456789abcdef"

for alg in $ALGS; do
	cfg="$WORK/broker-$alg.yaml"
	cat >"$cfg" <<EOF
issuer: "$BROKER/"
listen: "127.0.0.1:$BROKER_PORT"
upstream_allowed_networks: ["127.0.0.1"]   # the bench IdP listens on loopback
store:
  type: redis
  redis:
    addrs: ["127.0.0.1:$REDIS_PORT"]
    password: ""
    prefix: "bench-$alg"
    timeout: 2s
keys:
  signing:
    alg: $alg
    private_key_file: "$WORK/sign-$alg.pem"
    private_key_env: ""
  dpop:
    es256: { private_key_file: "$WORK/dpop-es256.pem", private_key_env: "" }
rate_limits:
  enabled: false # the load comes from one address: the per-IP limits (on by default) would refuse it
dpop:
  retry_delay: $RETRY_DELAY
  jitter: $JITTER
  max_retries: 1
clients:
  - client_id: "bench-app"
    name: "Bench App"
    client_secret: "$CLIENT_SECRET"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: ["$REDIRECT"]
    connections: ["bench-idp"]
connections:
  - name: "bench-idp"
    strategy: oidc
    options:
      issuer: "$IDP_URL"
      client_id: "broker"
      client_secret: "bench-upstream-secret"
      scope: "openid profile email"
      type: back_channel
      dpop_signing_alg: ES256
EOF
	"$WORK/broker" config validate "$cfg" >&2
	echo "== broker serve, ID tokens $alg, on $BROKER" >&2
	if [[ $PROFILE == 1 ]]; then
		"${BROKER_RUN[@]}" "$WORK/brokerprof" -config "$cfg" -cpuprofile "$WORK/cpu-$alg.pprof" -memprofile "$WORK/mem-$alg.pprof" \
			>"$WORK/broker-$alg.log" 2>&1 &
	else
		"${BROKER_RUN[@]}" "$WORK/broker" serve --config "$cfg" >"$WORK/broker-$alg.log" 2>&1 &
	fi
	BROKER_PID=$!
	PIDS+=("$BROKER_PID")
	wait_for curl -fsS "$BROKER/healthz"
	for c in $LEVELS; do
		for r in $(seq 1 "$REPEAT"); do
			for mode in $MODES; do
				n=$LOGINS
				if [[ $mode == sso ]]; then n=$SSO_LOGINS; fi
				"$WORK/loadgen" -broker "$BROKER" -client-id bench-app -client-secret "$CLIENT_SECRET" \
					-redirect-uri "$REDIRECT" -mode "$mode" -n "$n" -c "$c" -warmup "$WARMUP" -duration "$MAX_DURATION" \
					-pid "$BROKER_PID" -redis-pid "$REDIS_PID" -idp-pid "$IDP_PID" -rss-every "$RSS_EVERY" -label "$alg" \
					-out "$WORK/results.jsonl" || echo "run $alg $mode c=$c #$r reported errors" >&2
			done
		done
		if [[ $FLOOR == 1 ]]; then
			"$WORK/loadgen" -broker "$BROKER" -pid "$BROKER_PID" -probe /healthz,/readyz -n 5000 -warmup 500 -c "$c" \
				-label "$alg" | tee -a "$WORK/floor.txt"
		fi
	done
	kill -TERM "$BROKER_PID"
	for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$BROKER_PID" 2>/dev/null || true
	wait "$BROKER_PID" 2>/dev/null || true
done

echo
echo "Medians of $REPEAT run(s) per level and mode, $LOGINS full / $SSO_LOGINS sso logins each (+$WARMUP warm-up); nonce mode $NONCE_MODE; upstream subjects $IDP_SUBJECTS; $(nproc) CPUs; load average $LOAD_BEFORE before, $(cut -d" " -f1-3 /proc/loadavg) after; $(go version | cut -d' ' -f3)"
if [[ -s $WORK/results.jsonl ]]; then
	"$WORK/loadgen" -summarize "$WORK/results.jsonl"
else
	echo "no run completed" >&2
	exit 1
fi
grep -h '"errors":[1-9]' "$WORK/results.jsonl" >&2 || true
if [[ -s $WORK/floor.txt ]]; then
	echo
	echo "Stack floor (broker CPU per bare request; a login is about 3 broker requests, 1 upstream request, 5 Redis round trips):"
	cat "$WORK/floor.txt"
fi
if [[ $PROFILE == 1 ]]; then
	for alg in $ALGS; do
		echo
		echo "== broker CPU profile, ID tokens $alg (whole run, all levels)"
		go tool pprof -top -nodecount=15 "$WORK/brokerprof" "$WORK/cpu-$alg.pprof" 2>/dev/null | sed -n '1,25p'
	done
fi
