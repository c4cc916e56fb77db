package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// storeReplay is a dpop.ReplayCache over the shared store: SET NX with a TTL, so a proof is
// accepted once across every replica using the same Redis (RFC 9449 §11.1).
type storeReplay struct{ s sessions.Store }

func (r storeReplay) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	err := r.s.Create(ctx, sessions.KindJTI, key, []byte{1}, ttl)
	switch {
	case errors.Is(err, sessions.ErrExists):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("claim proof jti: %w", err)
	}
	return true, nil
}

// cors answers preflights and adds CORS headers for the configured origins: the DPoP and
// Authorization request headers are allowed, DPoP-Nonce and WWW-Authenticate exposed.
func cors(origins []string, next http.Handler) http.Handler {
	allowHeaders := strings.Join(dpop.CORSAllowHeaders, ", ")
	exposeHeaders := strings.Join(dpop.CORSExposeHeaders, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(origins, origin) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", exposeHeaders)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
			h.Set("Access-Control-Allow-Headers", allowHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}
