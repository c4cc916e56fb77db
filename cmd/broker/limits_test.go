package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestServerLimits checks the http.Server limits on the demo broker: 16 KiB of headers (431
// beyond), the broker's own 8 KiB query limit inside it (414), and the timeouts, and that
// rate limits are off in the demo.
func TestServerLimits(t *testing.T) {
	d := runDemo(t)
	srv := newHTTPServer(http.NotFoundHandler())
	if srv.MaxHeaderBytes != 16<<10 || srv.ReadHeaderTimeout != 5*time.Second || srv.ReadTimeout <= 0 ||
		srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("server limits: %+v", srv)
	}
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authorize := d.issuer + "authorize?client_id=" + demoClientID + "&redirect_uri=" + url.QueryEscape(d.appURL+"/callback")
	for _, tc := range []struct {
		name     string
		url      string
		header   string // size of an extra header
		status   int
		requests int // sent in a row, each answered status; 0 means 1
	}{
		{name: "headers over 16 KiB → 431", url: d.issuer + "healthz", header: strings.Repeat("h", 24<<10), status: http.StatusRequestHeaderFieldsTooLarge},
		{name: "headers of 12 KiB accepted", url: d.issuer + "healthz", header: strings.Repeat("h", 12<<10), status: http.StatusOK},
		{name: "query over 8 KiB → 414 from the broker", url: authorize + "&x=" + strings.Repeat("q", 8<<10), header: "", status: http.StatusRequestURITooLong},
		{name: "no rate limits in the demo", url: authorize, header: "", status: http.StatusFound, requests: 60}, // beyond the default per-IP burst of 40
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := max(tc.requests, 1)
			for i := range n {
				req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
				if tc.header != "" {
					req.Header.Set("X-Padding", tc.header)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, tc.status)
				}
			}
		})
	}
}
