package dpop

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestHeaderCache(t *testing.T) {
	t.Run("a cached header is still subject to each verifier's allow-list", func(t *testing.T) {
		s := testSigner(t, AlgEdDSA)
		c := Check{Method: "GET", URL: vtURL}
		p1, _ := s.Proof("GET", vtURL, "", "", vtNow)
		if _, err := vtVerifier().Verify(context.Background(), []string{p1}, c); err != nil {
			t.Fatal(err)
		}
		v := vtVerifier()
		v.Algs = []string{"ES256"}
		p2, _ := s.Proof("GET", vtURL, "", "", vtNow)
		_, err := v.Verify(context.Background(), []string{p2}, c)
		var pe *ProofError
		if !errors.As(err, &pe) || pe.Check != checkAlg {
			t.Fatalf("want %s, got %v", checkAlg, err)
		}
	})
	t.Run("invalid headers are never cached and the cache stays bounded", func(t *testing.T) {
		hc := &headerCache{m: make(map[string]*proofHeaderInfo), max: 2}
		bad := vtEncode(t, with(vtHeader(t, AlgES256), "typ", "JWT"))
		for i := 0; i < 2; i++ {
			if _, err := hc.lookup(bad); err == nil || err.Check != checkTyp {
				t.Fatalf("bad header: %v", err)
			}
		}
		if len(hc.m) != 0 {
			t.Fatal("invalid header cached")
		}
		for _, alg := range allAlgs {
			h := vtEncode(t, vtHeader(t, alg))
			info, err := hc.lookup(h)
			if err != nil || info.alg != alg || info.jkt != testSigner(t, alg).Thumbprint() {
				t.Fatalf("%s: %+v %v", alg, info, err)
			}
			if len(hc.m) > 2 {
				t.Fatalf("cache grew to %d", len(hc.m))
			}
		}
		long := vtEncode(t, with(vtHeader(t, AlgES256), "pad", strings.Repeat("x", headerCacheMaxLen)))
		if _, err := hc.lookup(long); err != nil {
			t.Fatal(err)
		}
		if _, ok := hc.m[long]; ok {
			t.Fatal("oversized header cached")
		}
	})
}
