package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var allAlgs = []string{AlgES256, AlgEdDSA, AlgEd25519, AlgRS256, AlgPS256}

var (
	keyMu    sync.Mutex
	keyCache = map[string]crypto.Signer{}
)

// testKey returns one cached key per key family (RSA generation is slow under -race).
func testKey(tb testing.TB, alg string) crypto.Signer {
	tb.Helper()
	family := alg
	switch alg {
	case AlgEd25519:
		family = AlgEdDSA
	case AlgPS256:
		family = AlgRS256
	}
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[family]; ok {
		return k
	}
	k, err := GenerateKey(family)
	if err != nil {
		tb.Fatalf("GenerateKey(%s): %v", family, err)
	}
	keyCache[family] = k
	return k
}

func testSigner(tb testing.TB, alg string) *Signer {
	tb.Helper()
	s, err := NewSigner(testKey(tb, alg), alg)
	if err != nil {
		tb.Fatalf("NewSigner(%s): %v", alg, err)
	}
	return s
}

type decodedProof struct {
	header map[string]any
	jwk    map[string]any
	claims map[string]any
}

// verifyProof checks the JWS signature against the embedded jwk and decodes it.
func verifyProof(tb testing.TB, tok string) decodedProof {
	tb.Helper()
	d, err := parseProof(tok)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// parseProof verifies tok against its embedded jwk (go-jose, or ed25519.Verify for the
// fully-specified "Ed25519" label go-jose v4 does not know) and decodes it.
func parseProof(tok string) (decodedProof, error) {
	var d decodedProof
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return d, fmt.Errorf("proof has %d parts", len(parts))
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil {
		return d, fmt.Errorf("header base64: %w", err)
	}
	if err := json.Unmarshal(hdr, &d.header); err != nil {
		return d, fmt.Errorf("header json: %w", err)
	}
	d.jwk, _ = d.header["jwk"].(map[string]any)
	rawJWK, _ := json.Marshal(d.header["jwk"])
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(rawJWK); err != nil {
		return d, fmt.Errorf("jwk: %w", err)
	}
	if !jwk.IsPublic() {
		return d, fmt.Errorf("jwk is not a public key")
	}
	var payload []byte
	if d.header["alg"] == AlgEd25519 {
		sig, err := b64.DecodeString(parts[2])
		if err != nil {
			return d, fmt.Errorf("sig base64: %w", err)
		}
		pub, ok := jwk.Key.(ed25519.PublicKey)
		if !ok || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
			return d, fmt.Errorf("Ed25519 signature does not verify")
		}
		if payload, err = b64.DecodeString(parts[1]); err != nil {
			return d, fmt.Errorf("payload base64: %w", err)
		}
	} else {
		alg, _ := d.header["alg"].(string)
		obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err != nil {
			return d, fmt.Errorf("go-jose parse: %w", err)
		}
		if obj.Signatures[0].Protected.JSONWebKey == nil {
			return d, fmt.Errorf("go-jose sees no embedded jwk")
		}
		if payload, err = obj.Verify(obj.Signatures[0].Protected.JSONWebKey); err != nil {
			return d, fmt.Errorf("go-jose verify: %w", err)
		}
	}
	if err := json.Unmarshal(payload, &d.claims); err != nil {
		return d, fmt.Errorf("claims json: %w", err)
	}
	return d, nil
}

func TestProofHeaderAndClaims(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	wantJWK := map[string][]string{
		"EC":  {"crv", "kty", "x", "y"},
		"OKP": {"crv", "kty", "x"},
		"RSA": {"e", "kty", "n"},
	}
	for _, alg := range allAlgs {
		t.Run(alg, func(t *testing.T) {
			s := testSigner(t, alg)
			if s.Alg() != alg {
				t.Fatalf("Alg() = %q", s.Alg())
			}
			tok, err := s.Proof("POST", "https://as.example.com/token?code=x#frag", "", "", now)
			if err != nil {
				t.Fatal(err)
			}
			d := verifyProof(t, tok)
			if d.header["typ"] != "dpop+jwt" || d.header["alg"] != alg {
				t.Errorf("header typ/alg = %v/%v", d.header["typ"], d.header["alg"])
			}
			if len(d.header) != 3 {
				t.Errorf("header has extra members: %v", d.header)
			}
			var members []string
			for k := range d.jwk {
				members = append(members, k)
			}
			slices.Sort(members)
			if want := wantJWK[d.jwk["kty"].(string)]; !slices.Equal(members, want) {
				t.Errorf("jwk members = %v, want %v (public only)", members, want)
			}
			rawJWK, _ := json.Marshal(d.jwk)
			var jwk jose.JSONWebKey
			_ = jwk.UnmarshalJSON(rawJWK)
			tp, err := Thumbprint(jwk.Key)
			if err != nil || tp != s.Thumbprint() {
				t.Errorf("thumbprint of embedded jwk %q (%v) != Signer.Thumbprint %q", tp, err, s.Thumbprint())
			}
			if d.claims["htm"] != "POST" || d.claims["htu"] != "https://as.example.com/token" {
				t.Errorf("htm/htu = %v %v", d.claims["htm"], d.claims["htu"])
			}
			if d.claims["iat"] != float64(now.Unix()) {
				t.Errorf("iat = %v", d.claims["iat"])
			}
			if jti, _ := d.claims["jti"].(string); len(jti) < 22 {
				t.Errorf("jti %q too short for 128 bits", jti)
			}
			for _, absent := range []string{"nonce", "ath"} {
				if _, ok := d.claims[absent]; ok {
					t.Errorf("claim %s present without input", absent)
				}
			}
		})
	}
}

func TestProofNonceAndATH(t *testing.T) {
	s := testSigner(t, AlgES256)
	// RFC 9449 §7.1 example: this access token has this ath.
	const at = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	const ath = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
	tests := []struct {
		name, nonce, at, wantNonce, wantATH string
	}{
		{name: "ath from access token (RFC 9449 §7.1 vector)", nonce: "", at: at, wantNonce: "", wantATH: ath},
		{name: "nonce claim carried", nonce: "eyJ7S_zG.eyJH0-Z.HX4w-7v", at: "", wantNonce: "eyJ7S_zG.eyJH0-Z.HX4w-7v", wantATH: ""},
		{name: "both", nonce: "n-1", at: at, wantNonce: "n-1", wantATH: ath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.Proof("GET", "https://rs.example.com/userinfo", tc.nonce, tc.at, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			c := verifyProof(t, tok).claims
			if got, _ := c["nonce"].(string); got != tc.wantNonce {
				t.Errorf("nonce = %q, want %q", got, tc.wantNonce)
			}
			if got, _ := c["ath"].(string); got != tc.wantATH {
				t.Errorf("ath = %q, want %q", got, tc.wantATH)
			}
		})
	}
}

func TestHTU(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "htu strips query", in: "https://as.example.com/token?a=1&b=2", want: "https://as.example.com/token", wantErr: false},
		{name: "htu strips fragment", in: "https://as.example.com/token#frag", want: "https://as.example.com/token", wantErr: false},
		{name: "htu strips query and fragment", in: "https://as.example.com/t?x#y", want: "https://as.example.com/t", wantErr: false},
		{name: "htu strips empty query", in: "https://as.example.com/t?", want: "https://as.example.com/t", wantErr: false},
		{name: "htu keeps port and path", in: "http://127.0.0.1:8080/a/b/c", want: "http://127.0.0.1:8080/a/b/c", wantErr: false},
		{name: "htu keeps escaped path", in: "https://as.example.com/a%2Fb/c", want: "https://as.example.com/a%2Fb/c", wantErr: false},
		{name: "htu drops userinfo", in: "https://user:pw@as.example.com/t", want: "https://as.example.com/t", wantErr: false},
		{name: "relative URL rejected", in: "/token", want: "", wantErr: true},
		{name: "bad URL rejected", in: "https://[::1/t", want: "", wantErr: true},
	}
	s := testSigner(t, AlgES256)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HTU(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("HTU(%q) = %q, %v; want %q, err %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			tok, err := s.Proof("GET", tc.in, "", "", time.Now())
			if tc.wantErr {
				if err == nil {
					t.Fatal("Proof accepted a bad URL")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c := verifyProof(t, tok).claims; c["htu"] != tc.want {
				t.Errorf("htu claim = %v", c["htu"])
			}
		})
	}
}

func TestJTIUnique(t *testing.T) {
	for _, alg := range []string{AlgES256, AlgEdDSA} {
		t.Run("jti unique "+alg, func(t *testing.T) {
			s := testSigner(t, alg)
			seen := map[string]bool{}
			for range 500 {
				tok, err := s.Proof("POST", "https://as.example.com/token", "", "", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				jti := verifyProof(t, tok).claims["jti"].(string)
				if seen[jti] {
					t.Fatalf("jti %q repeated", jti)
				}
				seen[jti] = true
			}
		})
	}
}

func TestThumbprintRFC7638(t *testing.T) {
	// RFC 7638 §3.1 example key and its SHA-256 thumbprint.
	const jwkJSON = `{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON([]byte(jwkJSON)); err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(jwk.Key)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint = %s, want %s", got, want)
	}
	if _, err := Thumbprint("not a key"); err == nil {
		t.Fatal("Thumbprint accepted a non-key")
	}
}

func TestNewSignerRejects(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{name: "none rejected", key: testKey(t, AlgES256), alg: "none"},
		{name: "MAC rejected", key: testKey(t, AlgES256), alg: "HS256"},
		{name: "unknown alg rejected", key: testKey(t, AlgES256), alg: "ES384"},
		{name: "ES256 with RSA key", key: testKey(t, AlgRS256), alg: AlgES256},
		{name: "ES256 with P-384 key", key: p384, alg: AlgES256},
		{name: "EdDSA with EC key", key: testKey(t, AlgES256), alg: AlgEdDSA},
		{name: "RS256 with Ed25519 key", key: testKey(t, AlgEdDSA), alg: AlgRS256},
		{name: "PS256 with 1024-bit RSA", key: rsa1024, alg: AlgPS256},
		{name: "nil key", key: nil, alg: AlgES256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := NewSigner(tc.key, tc.alg); err == nil {
				t.Fatalf("NewSigner accepted: %v", s.Alg())
			}
		})
	}
}

func TestWithAlg(t *testing.T) {
	ed := testSigner(t, AlgEdDSA)
	tests := []struct {
		name    string
		from    *Signer
		to      string
		wantErr bool
	}{
		{name: "EdDSA to Ed25519", from: ed, to: AlgEd25519, wantErr: false},
		{name: "Ed25519 to EdDSA", from: testSigner(t, AlgEd25519), to: AlgEdDSA, wantErr: false},
		{name: "same label", from: ed, to: AlgEdDSA, wantErr: false},
		{name: "RS256 to PS256", from: testSigner(t, AlgRS256), to: AlgPS256, wantErr: false},
		{name: "EdDSA to ES256 rejected", from: ed, to: AlgES256, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.from.WithAlg(tc.to)
			if tc.wantErr {
				if err == nil {
					t.Fatal("WithAlg accepted a misfit alg")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Alg() != tc.to || s.Thumbprint() != tc.from.Thumbprint() {
				t.Fatalf("alg %s thumbprint %s; want %s %s", s.Alg(), s.Thumbprint(), tc.to, tc.from.Thumbprint())
			}
			tok, err := s.Proof("POST", "https://as.example.com/token", "", "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if d := verifyProof(t, tok); d.header["alg"] != tc.to {
				t.Fatalf("alg on wire = %v", d.header["alg"])
			}
		})
	}
}

func TestKeyAlgFits(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		key  crypto.Signer
		alg  string
		want bool
	}{
		{key: testKey(t, AlgES256), alg: AlgES256, want: true},
		{key: testKey(t, AlgES256), alg: AlgRS256, want: false},
		{key: p384, alg: AlgES256, want: false},
		{key: testKey(t, AlgEdDSA), alg: AlgEdDSA, want: true},
		{key: testKey(t, AlgEdDSA), alg: AlgEd25519, want: true},
		{key: testKey(t, AlgEdDSA), alg: AlgES256, want: false},
		{key: testKey(t, AlgRS256), alg: AlgRS256, want: true},
		{key: testKey(t, AlgRS256), alg: AlgPS256, want: true},
		{key: testKey(t, AlgRS256), alg: AlgEdDSA, want: false},
		{key: nil, alg: AlgES256, want: false},
	}
	for _, tc := range tests {
		if got := KeyAlgFits(tc.key, tc.alg); got != tc.want {
			t.Errorf("KeyAlgFits(%T, %s) = %v, want %v", tc.key, tc.alg, got, tc.want)
		}
	}
}

func TestPEM(t *testing.T) {
	ec := testKey(t, AlgES256).(*ecdsa.PrivateKey)
	rk := testKey(t, AlgRS256).(*rsa.PrivateKey)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs1 := x509.MarshalPKCS1PrivateKey(rk)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkixPub, _ := x509.MarshalPKIXPublicKey(ec.Public())
	tests := []struct {
		name    string
		data    []byte
		want    crypto.Signer
		wantErr bool
	}{
		{name: "SEC1 EC PRIVATE KEY", data: pemOf("EC PRIVATE KEY", sec1), want: ec, wantErr: false},
		{name: "SEC1 after EC PARAMETERS", data: append(pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), pemOf("EC PRIVATE KEY", sec1)...), want: ec, wantErr: false},
		{name: "PKCS#1 RSA PRIVATE KEY", data: pemOf("RSA PRIVATE KEY", pkcs1), want: rk, wantErr: false},
		{name: "public key only", data: pemOf("PUBLIC KEY", pkixPub), want: nil, wantErr: true},
		{name: "not PEM", data: []byte("hello"), want: nil, wantErr: true},
		{name: "encrypted", data: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: pkcs1}), want: nil, wantErr: true},
		{name: "corrupt DER", data: pemOf("PRIVATE KEY", []byte{1, 2, 3}), want: nil, wantErr: true},
	}
	for _, alg := range []string{AlgES256, AlgEdDSA, AlgRS256} {
		data, err := MarshalPrivateKeyPEM(testKey(t, alg))
		if err != nil {
			t.Fatal(err)
		}
		if !isPKCS8PEM(string(data)) {
			t.Fatalf("%s: not PKCS#8 PEM", alg)
		}
		tests = append(tests, struct {
			name    string
			data    []byte
			want    crypto.Signer
			wantErr bool
		}{name: "PKCS#8 round trip " + alg, data: data, want: testKey(t, alg), wantErr: false})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePrivateKeyPEM(tc.data)
			if tc.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			type equaler interface{ Equal(crypto.PublicKey) bool }
			if !got.Public().(equaler).Equal(tc.want.Public()) {
				t.Fatal("parsed key differs")
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	for _, alg := range []string{AlgES256, AlgEd25519, AlgEdDSA} {
		k, err := GenerateKey(alg)
		if err != nil || !KeyAlgFits(k, alg) {
			t.Errorf("GenerateKey(%s) = %T, %v", alg, k, err)
		}
	}
	if !KeyAlgFits(testKey(t, AlgPS256), AlgPS256) {
		t.Error("RSA key does not fit PS256")
	}
	if _, err := GenerateKey("HS256"); err == nil {
		t.Error("GenerateKey(HS256) accepted")
	}
}

// isPKCS8PEM reports whether s is exactly one PEM block of type PRIVATE KEY (PKCS#8).
func isPKCS8PEM(s string) bool {
	block, rest := pem.Decode([]byte(s))
	return block != nil && block.Type == "PRIVATE KEY" && len(strings.TrimSpace(string(rest))) == 0
}
