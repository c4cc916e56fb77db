package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

func main() { os.Exit(run()) }

func run() int {
	path := flag.String("config", "", "broker configuration file")
	profile := flag.String("cpuprofile", "broker.cpu.pprof", "CPU profile output")
	memProfile := flag.String("memprofile", "", "allocation profile output, written at exit (optional)")
	flag.Parse()
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		fmt.Fprintln(os.Stderr, "brokerprof: invalid configuration:", problems)
		return 1
	}
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	store, err := config.OpenStore(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof: store:", err)
		return 1
	}
	defer store.Close()
	host, _ := os.Hostname()
	events := &logs.Writer{Logger: logger, Store: store, MaxLen: cfg.Logs.MaxEvents, Hostname: host}
	srv, err := broker.New(cfg, broker.Deps{Store: store, Events: events, Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	// As serve: seed the configured connections before listening.
	initCtx, cancelInit := context.WithTimeout(context.Background(), 10*time.Second)
	err = srv.Init(initCtx)
	cancelInit()
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	f, err := os.Create(*profile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	defer pprof.StopCPUProfile()
	if *memProfile != "" {
		defer writeAllocs(*memProfile)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	logger.Info("listening", "addr", ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return 1
	}
	return 0
}

// writeAllocs writes the allocation profile (every allocation since start, sampled).
func writeAllocs(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "brokerprof:", err)
	}
}
