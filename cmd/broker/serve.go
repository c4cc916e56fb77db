package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", os.Getenv("BROKER_CONFIG"), "configuration file (default $BROKER_CONFIG)")
	listen := fs.String("listen", os.Getenv(listenEnv), "listen address instead of the configuration's listen (default $"+listenEnv+"; the container image sets 0.0.0.0:8080)")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker serve: unexpected argument %q (the configuration file is --config FILE)\n", fs.Arg(0))
		return usageMistake(stderr, findCommand("serve"))
	}
	if *path == "" {
		fmt.Fprintln(stderr, "broker serve: --config FILE (or BROKER_CONFIG) is required")
		return 2
	}
	hup, stopHup := notifyHangup() // from now on SIGHUP reloads (once serving) instead of ending the process
	defer stopHup()
	cfg, problems, err := config.LoadAndValidate(*path)
	if err != nil {
		fmt.Fprintf(stderr, "broker serve: %v\n", err)
		return 1
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "broker serve: invalid configuration %s:\n", *path)
		for _, p := range problems {
			fmt.Fprintln(stderr, p.Error())
		}
		return 1
	}
	listenFrom := "config"
	if *listen != "" {
		listenFrom = listenEnv
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "listen" {
				listenFrom = "--listen"
			}
		})
	}
	if cfg.Listen, err = serveListen(cfg.Listen, *listen); err != nil {
		fmt.Fprintf(stderr, "broker serve: %v\n", err)
		return 2
	}
	plog, err := openProcessLog(&cfg.Log, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "broker serve: %v\n", err)
		return 1
	}
	defer plog.close()
	logger := plog.logger
	sessions.SetRedisLogger(logger)
	store, err := config.OpenStore(cfg)
	if err != nil {
		logger.Error("store", "err", err)
		return 1
	}
	defer store.Close()
	host, _ := os.Hostname()
	events := &logs.Writer{Logger: logger, EventLogger: plog.events, Store: store, MaxLen: cfg.Logs.MaxEvents, Hostname: host}
	tracing, stopTracing, err := newTracing(ctx, os.Getenv, logger) // OTEL_* (tracing.go); nil: off
	if err != nil {
		logger.Error("startup failed", "err", err)
		return 1
	}
	defer stopTracing() // after srv.Close: the last spans are flushed
	srv, err := broker.New(cfg, broker.Deps{Store: store, Events: events, Logger: logger, TracerProvider: tracing})
	if err != nil {
		logger.Error("startup failed", "err", err)
		return 1
	}
	// After the HTTP server stopped (no more logouts) and before the store closes: pending
	// back-channel logout deliveries get their grace and record their outcome.
	defer srv.Close()
	// Seed the YAML connections into the store now, so a clash with a connection made through
	// the management API stops startup with a clear message. An unreachable store does not:
	// the broker starts not-ready (/readyz 503) and seeds on the first request once it is back.
	initCtx, cancelInit := context.WithTimeout(ctx, 10*time.Second)
	err = srv.Init(initCtx)
	cancelInit()
	switch {
	case errors.Is(err, sessions.ErrUnavailable):
		logger.Warn("store unavailable at startup; connections will be seeded when it is reachable", "err", logs.KeepLevel(err))
	case err != nil:
		logger.Error("startup failed", "err", err)
		return 1
	}
	ln, inherited, err := openListener(cfg.Listen, processActivation(), logger)
	if inherited {
		listenFrom = "socket activation"
	}
	if err != nil {
		logger.Error("listen failed", "addr", cfg.Listen, "err", err)
		return 1
	}
	logger.Info("listening", "addr", ln.Addr().String(), "listen_from", listenFrom, "issuer", cfg.Issuer, "store", cfg.Store.Type,
		"connections", len(cfg.Connections), "clients", len(cfg.Clients), "version", buildinfo.Read().Version, "commit", buildinfo.Read().Commit)
	for i := range cfg.Connections { // what to register at each IdP
		c := &cfg.Connections[i]
		redirect, bcl := srv.RegistrationURLs(c)
		logger.Info("connection", "name", c.Name, "id", c.ConnectionID(), "redirect_uri", redirect, "backchannel_logout_uri", bcl)
	}
	pairs := []serverListener{{newHTTPServer(srv.Handler()), ln}}
	if cfg.AdminListen != "" { // /console, /metrics and /api/v2 move here (broker.Server.AdminHandler)
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			_ = ln.Close()
			logger.Error("admin listen failed", "addr", cfg.AdminListen, "err", err)
			return 1
		}
		logger.Info("admin listening", "addr", aln.Addr().String(), "serves", "/console /metrics /api/v2 /healthz /readyz")
		pairs = append(pairs, serverListener{newHTTPServer(srv.AdminHandler()), aln})
	}
	rctx, stopReload := context.WithCancel(ctx)
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		reloadOnHangup(rctx, hup, serveReloader(srv, *path, *listen))
	}()
	defer func() { stopReload(); <-reloaded }() // before srv.Close and store.Close: no reload runs on a closed store
	if err := serveAll(ctx, pairs...); err != nil {
		logger.Error("server failed", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}
