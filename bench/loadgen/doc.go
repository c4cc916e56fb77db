// Command loadgen runs browser-style logins against a running broker and reports logins/s,
// latency percentiles and the broker process's CPU per login and RSS: full brokered logins
// (-mode full), or single sign-on logins (-mode sso) answered from the broker session of a
// browser that signed in once.
//
// Modes:
//
//	loadgen -broker URL -client-id ID -client-secret S -redirect-uri URI [-mode full|sso -n N -c C ...]
//	loadgen -serve-idp 127.0.0.1:0 [-idp-url-file F]   # run the fast upstream IdP until SIGTERM
//	loadgen -summarize results.jsonl                    # median table of earlier runs
//	loadgen -broker URL -pid PID -probe /healthz,/readyz [-n N -c C]  # stack floor per request
//	loadgen -free-ports K                               # print K free loopback ports
//
// Its parts: main.go reads the flags and picks the mode; load.go runs the logins
// (/authorize, the upstream, /login/callback, /oauth/token, checking state, code and the ID
// token's nonce) with a warm-up and a measured phase; in sso mode each worker's browser first
// signs in with one full login (not measured), and each measured login must go from
// /authorize straight back to the app (never to the upstream) with a code whose ID token
// carries that first login's sid; probe.go measures the broker CPU one bare request costs;
// report.go reads CPU and RSS from /proc, prints a run and appends it as a JSON line, and
// summarizes runs, with the single sign-on login's broker CPU as a fraction of the full
// login's at each level measured in both modes. The upstream it serves is bench/fastidp;
// bench/run.sh drives whole runs (see bench/README.md).
package main
