package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/config"
)

// SIGHUP: `serve` reads its configuration file again and applies what can change live
// (broker.Server.Reload: clients, connections, APIs, management tokens, rate limits, …),
// keeping the running configuration when the file is invalid; `demo`, whose configuration is
// built in, logs that it ignores the signal. Without a handler SIGHUP would end the process.

// notifyHangup starts catching SIGHUP (a signal that arrives before the handler runs waits in
// the channel, one at a time); stop ends it.
func notifyHangup() (hup <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// reloadOnHangup calls reload for every signal on hup until ctx is done. Signals that arrive
// while a reload runs are merged into one more reload.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, reload func(context.Context)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload(ctx)
		}
	}
}

// serveReloader returns the reload serve runs on SIGHUP: the file at path read and validated
// as at start (config.LoadAndValidate; every problem refuses the reload), the --listen or
// $BROKER_LISTEN override applied as at start, and the result given to srv.Reload, which logs
// it.
func serveReloader(srv *broker.Server, path, listenOverride string) func(context.Context) {
	load := func() (*config.Config, error) {
		cfg, problems, err := config.LoadAndValidate(path)
		if err != nil {
			return nil, err
		}
		if len(problems) > 0 {
			return nil, config.FieldErrors(problems)
		}
		if cfg.Listen, err = serveListen(cfg.Listen, listenOverride); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	return func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = srv.Reload(rctx, load) // logged and counted by Reload
	}
}

// ignoreHangup logs each SIGHUP on hup until ctx is done: the demo has no file to read again.
func ignoreHangup(ctx context.Context, hup <-chan os.Signal, logger *slog.Logger) {
	reloadOnHangup(ctx, hup, func(context.Context) {
		logger.Warn("SIGHUP ignored: the demo's configuration is built in; there is no file to reload (broker serve reloads on SIGHUP)")
	})
}
