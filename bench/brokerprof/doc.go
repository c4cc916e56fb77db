// Command brokerprof runs the broker exactly as `broker serve --config FILE` wires it (store,
// event writer to stdout, HTTP server) and writes a CPU profile of the process until SIGTERM.
//
// A load run with loadgen (bench/run.sh with PROFILE=1) then shows where the broker's own CPU
// goes. It is for measurement only: main.go loads and validates the configuration, opens the
// store, builds the broker.Server, seeds its connections and serves it, with a CPU profile
// (-cpuprofile) and, at exit, an allocation profile (-memprofile).
//
//	brokerprof -config broker.yaml -cpuprofile broker.cpu.pprof -memprofile broker.mem.pprof
package main
