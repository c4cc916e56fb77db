package demoidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// proofKey signs DPoP proofs with go-jose directly (tests must not depend on package dpop).
type proofKey struct {
	alg    jose.SignatureAlgorithm
	signer jose.Signer
	jkt    string
}

// edLabelSigner signs Ed25519 under an arbitrary alg label (e.g. the fully specified "Ed25519").
type edLabelSigner struct {
	key   ed25519.PrivateKey
	label jose.SignatureAlgorithm
}

func (s edLabelSigner) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: s.key.Public()}
}
func (s edLabelSigner) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{s.label} }
func (s edLabelSigner) SignPayload(payload []byte, _ jose.SignatureAlgorithm) ([]byte, error) {
	return ed25519.Sign(s.key, payload), nil
}

func thumb(t testing.TB, pub any) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func dpopOpts() *jose.SignerOptions {
	return (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt")
}

func newProofKey(t testing.TB, alg string) *proofKey {
	t.Helper()
	var (
		key any
		pub any
	)
	switch alg {
	case "ES256", "ES384":
		curve := elliptic.P256()
		if alg == "ES384" {
			curve = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key, pub = k, &k.PublicKey
	case "EdDSA":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key, pub = k, k.Public()
	case "Ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key, pub = edLabelSigner{key: k, label: "Ed25519"}, k.Public()
	default:
		t.Fatalf("unsupported test alg %s", alg)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key}, dpopOpts())
	if err != nil {
		t.Fatal(err)
	}
	return &proofKey{alg: jose.SignatureAlgorithm(alg), signer: s, jkt: thumb(t, pub)}
}

type proofSpec struct {
	htm, htu, nonce, ath, jti string
	iat                       time.Time
}

func (k *proofKey) sign(t testing.TB, ps proofSpec) string {
	t.Helper()
	if ps.jti == "" {
		ps.jti = rand.Text()
	}
	if ps.iat.IsZero() {
		ps.iat = time.Now()
	}
	c := map[string]any{"jti": ps.jti, "htm": ps.htm, "htu": ps.htu, "iat": ps.iat.Unix()}
	if ps.nonce != "" {
		c["nonce"] = ps.nonce
	}
	if ps.ath != "" {
		c["ath"] = ps.ath
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := k.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startProvider(t testing.TB, opts Options) *Provider {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

const testRedirect = "http://127.0.0.1:9/callback"

func oauthConfig(p *Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     "broker",
		ClientSecret: "broker-secret",
		RedirectURL:  testRedirect,
		Scopes:       []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   p.URL + "/authorize",
			TokenURL:  p.URL + "/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

// authorize runs GET /authorize and returns the redirect's query.
func authorize(t testing.TB, p *Provider, verifier, nonce string, extra ...oauth2.AuthCodeOption) url.Values {
	t.Helper()
	opts := append([]oauth2.AuthCodeOption{oauth2.SetAuthURLParam("nonce", nonce)}, extra...)
	if verifier != "" {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	resp, err := noRedirect.Get(oauthConfig(p).AuthCodeURL("st-1", opts...))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusFound {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("authorize: status %d: %s", resp.StatusCode, b)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		t.Fatalf("redirected to %s", got)
	}
	return loc.Query()
}

type tokenResp struct {
	status int
	header http.Header
	body   map[string]any
}

func (r tokenResp) str(k string) string { s, _ := r.body[k].(string); return s }

// postToken sends a token request with client_secret_basic and optional DPoP header.
func postToken(t testing.TB, p *Provider, form url.Values, proofs ...string) tokenResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("broker", "broker-secret")
	for _, pr := range proofs {
		req.Header.Add("DPoP", pr)
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) tokenResp {
	t.Helper()
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := tokenResp{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out.body); err != nil {
			t.Fatalf("bad JSON %q: %v", b, err)
		}
	}
	return out
}

func codeForm(code, verifier string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {testRedirect},
		"code_verifier": {verifier},
	}
}

// dpopTransport adds a fresh proof to each request and remembers the server nonce.
type dpopTransport struct {
	t     testing.TB
	key   *proofKey
	mu    sync.Mutex
	nonce string
}

func (d *dpopTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	d.mu.Lock()
	nonce := d.nonce
	d.mu.Unlock()
	r2 := req.Clone(req.Context())
	u := *req.URL
	u.RawQuery, u.Fragment = "", ""
	r2.Header.Set("DPoP", d.key.sign(d.t, proofSpec{htm: req.Method, htu: u.String(), nonce: nonce}))
	resp, err := http.DefaultTransport.RoundTrip(r2)
	if err == nil {
		if n := resp.Header.Get("DPoP-Nonce"); n != "" {
			d.mu.Lock()
			d.nonce = n
			d.mu.Unlock()
		}
	}
	return resp, err
}

func ath(tok string) string { return b64sha256(tok) }
