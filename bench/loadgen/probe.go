package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// probe measures the stack floor: the broker CPU one bare request costs at concurrency c.
// /healthz is the HTTP server alone; /readyz adds one store round trip (PING). A login's
// plumbing is about 3 broker requests, 1 upstream request and 5 store round trips, so these
// figures tell how much of a login's CPU the net/http + go-redis stack spends at that
// concurrency, whatever the broker does.
func probe(ctx context.Context, cfg config, paths []string) error {
	if cfg.pid <= 0 {
		return fmt.Errorf("-probe needs -pid (the broker's process id)")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2*cfg.c + 8
	tr.Proxy = nil
	client := &http.Client{Transport: tr, Timeout: cfg.timeout}
	base := strings.TrimSuffix(cfg.broker, "/")
	for _, p := range paths {
		u := base + "/" + strings.TrimPrefix(p, "/")
		run := func(n int) (int, error) {
			var next, failed atomic.Int64
			var wg sync.WaitGroup
			var first atomic.Pointer[error]
			for range cfg.c {
				wg.Go(func() {
					for next.Add(1) <= int64(n) && ctx.Err() == nil {
						if err := get(ctx, client, u); err != nil {
							failed.Add(1)
							first.CompareAndSwap(nil, &err)
						}
					}
				})
			}
			wg.Wait()
			if e := first.Load(); e != nil {
				return int(failed.Load()), *e
			}
			return 0, ctx.Err()
		}
		if _, err := run(cfg.warmup); err != nil {
			return fmt.Errorf("probe %s: %w", u, err)
		}
		before, err := readProc(cfg.pid)
		if err != nil {
			return err
		}
		start := time.Now()
		if failed, err := run(cfg.n); err != nil {
			return fmt.Errorf("probe %s: %d failed: %w", u, failed, err)
		}
		el := time.Since(start)
		after, err := readProc(cfg.pid)
		if err != nil {
			return err
		}
		fmt.Printf("%s c=%d probe %s: %.0f req/s, broker CPU %.1f µs/request (kernel %.1f)\n", cfg.label, cfg.c, p,
			float64(cfg.n)/el.Seconds(), float64(after.cpuTicks-before.cpuTicks)*1e4/float64(cfg.n),
			float64(after.sysTicks-before.sysTicks)*1e4/float64(cfg.n))
	}
	return nil
}

func get(ctx context.Context, client *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
