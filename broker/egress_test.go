package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
)

// loopbackPolicy allows 127.0.0.0/8, where the test servers listen.
func loopbackPolicy(t testing.TB) *egressPolicy {
	t.Helper()
	p, err := newEgressPolicy([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// countingServer is a loopback HTTP server that counts the requests it receives.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingServer(t testing.TB, h http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.WriteString(w, "internal secret")
	}))
	t.Cleanup(s.Close)
	return s
}

func TestUpstreamAddressPolicyRefusesInternalAddresses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		addr    string
		allowed []string
		reason  string // "" = allowed
	}{
		{name: "public IPv4", addr: "93.184.216.34"},
		{name: "public IPv6", addr: "2606:4700:4700::1111"},
		{name: "172.32.0.1 is outside 172.16.0.0/12", addr: "172.32.0.1"},
		{name: "100.128.0.1 is outside CGNAT", addr: "100.128.0.1"},
		{name: "loopback", addr: "127.0.0.1", reason: "loopback"},
		{name: "loopback anywhere in 127/8", addr: "127.1.2.3", reason: "loopback"},
		{name: "loopback allowed by the allow-list", addr: "127.0.0.1", allowed: []string{"127.0.0.0/8"}},
		{name: "an allowed single address allows only itself", addr: "127.0.0.2", allowed: []string{"127.0.0.1"}, reason: "loopback"},
		{name: "RFC 1918 10/8", addr: "10.1.2.3", reason: "private (RFC 1918)"},
		{name: "RFC 1918 172.16/12", addr: "172.31.255.255", reason: "private (RFC 1918)"},
		{name: "RFC 1918 192.168/16", addr: "192.168.1.1", reason: "private (RFC 1918)"},
		{name: "private network allowed by CIDR", addr: "10.1.2.3", allowed: []string{"10.0.0.0/8"}},
		{name: "cloud metadata", addr: "169.254.169.254", reason: "link-local (cloud metadata)"},
		{name: "cloud metadata allowed only when listed", addr: "169.254.169.254", allowed: []string{"10.0.0.0/8", "169.254.169.254"}},
		{name: "CGNAT", addr: "100.64.0.1", reason: "shared CGNAT"},
		{name: "unspecified IPv4", addr: "0.0.0.0", reason: "unspecified"},
		{name: "this network", addr: "0.1.2.3", reason: "unspecified"},
		{name: "broadcast", addr: "255.255.255.255", reason: "reserved or broadcast"},
		{name: "IPv4 multicast", addr: "224.0.0.1", reason: "multicast"},
		{name: "benchmarking", addr: "198.18.0.1", reason: "benchmarking"},
		{name: "IPv6 loopback", addr: "::1", reason: "loopback"},
		{name: "IPv6 loopback allowed", addr: "::1", allowed: []string{"::1"}},
		{name: "IPv6 unspecified", addr: "::", reason: "unspecified"},
		{name: "IPv6 metadata", addr: "fd00:ec2::254", reason: "unique-local"},
		{name: "IPv6 unique-local", addr: "fc00::1", reason: "unique-local"},
		{name: "IPv6 link-local", addr: "fe80::1", reason: "link-local"},
		{name: "IPv6 link-local with a zone", addr: "fe80::1%eth0", reason: "link-local"},
		{name: "IPv6 multicast", addr: "ff02::1", reason: "multicast"},
		{name: "IPv6 site-local", addr: "fec0::1", reason: "site-local"},
		{name: "IPv4-mapped loopback", addr: "::ffff:127.0.0.1", reason: "loopback"},
		{name: "IPv4-mapped metadata", addr: "::ffff:169.254.169.254", reason: "link-local"},
		{name: "IPv4-mapped loopback allowed by the IPv4 allow-list", addr: "::ffff:127.0.0.1", allowed: []string{"127.0.0.0/8"}},
		{name: "IPv4-mapped public", addr: "::ffff:93.184.216.34"},
		{name: "IPv4-compatible loopback", addr: "::127.0.0.1", reason: "IPv4-compatible"},
		{name: "NAT64 of metadata", addr: "64:ff9b::a9fe:a9fe", reason: "link-local (cloud metadata) (169.254.169.254 embedded in NAT64)"},
		{name: "NAT64 of a public address", addr: "64:ff9b::5db8:d822"},
		{name: "local-use NAT64", addr: "64:ff9b:1::1", reason: "local-use NAT64"},
		{name: "6to4 of loopback", addr: "2002:7f00:1::1", reason: "loopback (127.0.0.1 embedded in 6to4)"},
		{name: "6to4 of a private address", addr: "2002:0a00:0001::", reason: "private (RFC 1918) (10.0.0.1 embedded in 6to4)"},
		{name: "6to4 of a public address", addr: "2002:5db8:d822::1"},
		{name: "IPv4-translated loopback", addr: "::ffff:0:7f00:1", reason: "loopback (127.0.0.1 embedded in IPv4-translated)"},
		{name: "Teredo", addr: "2001:0:4136:e378:8000:63bf:3fff:fdd2", reason: "Teredo"},
		{name: "IPv6 documentation", addr: "2001:db8::1", reason: "documentation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newEgressPolicy(tc.allowed)
			if err != nil {
				t.Fatal(err)
			}
			err = p.check(netip.MustParseAddr(tc.addr))
			var re *AddressRefusedError
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("%s refused: %v", tc.addr, err)
			case tc.reason != "" && (!errors.As(err, &re) || !strings.Contains(re.Reason, tc.reason)):
				t.Fatalf("%s: err %v, want a refusal for %q", tc.addr, err, tc.reason)
			case tc.reason != "" && !strings.Contains(err.Error(), "not in upstream_allowed_networks"):
				t.Fatalf("the refusal %q does not name the key that would allow it", err)
			}
		})
	}
}

func TestUpstreamAddressPolicyRefusesUnreadableDialAddresses(t *testing.T) {
	p := &egressPolicy{}
	for _, tc := range []struct {
		name, network, address string
	}{
		{name: "no port", network: "tcp", address: "93.184.216.34"},
		{name: "a host name instead of an address", network: "tcp", address: "example.com:443"},
		{name: "not TCP", network: "udp", address: "93.184.216.34:53"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var re *AddressRefusedError
			if err := p.control(context.Background(), tc.network, tc.address, nil); !errors.As(err, &re) {
				t.Fatalf("err %v, want an *AddressRefusedError", err)
			}
		})
	}
	if err := p.control(context.Background(), "tcp4", "93.184.216.34:443", nil); err != nil {
		t.Fatalf("public address refused: %v", err)
	}
}

func TestUpstreamAllowedNetworksAreValidated(t *testing.T) {
	cfg := config.Default()
	cfg.UpstreamAllowedNetworks = []string{"10.0.0.0/8", "idp.internal", "10.0.0.0/33", "::1", "fe80::1%eth0"}
	want := map[string]bool{"upstream_allowed_networks[1]": true, "upstream_allowed_networks[2]": true, "upstream_allowed_networks[4]": true}
	for _, e := range cfg.Validate() {
		if strings.HasPrefix(e.Key, "upstream_allowed_networks") {
			if !want[e.Key] || !strings.Contains(e.Reason, "is not an IP address or CIDR") {
				t.Errorf("unexpected %v", e)
			}
			delete(want, e.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("no validation error for %v", want)
	}
}

func TestUpstreamDialRefusesLoopbackUnlessAllowed(t *testing.T) {
	internal := newCountingServer(t, nil)
	for _, tc := range []struct {
		name    string
		allowed []string
		refused bool
	}{
		{name: "default: no internal network allowed", refused: true},
		{name: "another network allowed", allowed: []string{"10.0.0.0/8"}, refused: true},
		{name: "loopback allowed", allowed: []string{"127.0.0.1/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := UpstreamHTTPClient(5*time.Second, tc.allowed)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			before := internal.hits.Load()
			resp, err := c.Get(internal.URL + "/latest/meta-data/")
			var re *AddressRefusedError
			if tc.refused {
				if !errors.As(err, &re) || re.Addr != netip.MustParseAddr("127.0.0.1") || re.Reason != "loopback" {
					t.Fatalf("err %v, want the address policy's refusal", err)
				}
				if n := internal.hits.Load() - before; n != 0 {
					t.Fatalf("the internal server received %d requests", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
	}
}

func TestUpstreamClientRefusesRedirects(t *testing.T) {
	internal := newCountingServer(t, nil)
	cert, pool := testCert(t, "127.0.0.1")
	for _, tc := range []struct {
		name   string
		tls    bool
		status int
		target func(self string) string
	}{
		{name: "302 to an internal host", status: http.StatusFound, target: func(string) string { return internal.URL + "/latest/meta-data/" }},
		{name: "307 keeps the POST body: to an internal host", status: http.StatusTemporaryRedirect, target: func(string) string { return internal.URL + "/token" }},
		{name: "https to plain http", tls: true, status: http.StatusMovedPermanently, target: func(string) string { return internal.URL + "/" }},
		{name: "same origin", status: http.StatusFound, target: func(self string) string { return self + "/elsewhere" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var self string
			idp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					t.Error("the redirect was followed to the same origin")
				}
				http.Redirect(w, r, tc.target(self), tc.status)
			}))
			base := &http.Client{}
			if tc.tls {
				idp.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				idp.StartTLS()
				base.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			} else {
				idp.Start()
			}
			defer idp.Close()
			self = idp.URL
			c, err := upstreamClient(base, upstreamHTTPOptions{timeout: 5 * time.Second, policy: loopbackPolicy(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			resp, err := c.Post(idp.URL+"/token", "application/x-www-form-urlencoded", strings.NewReader("client_secret=s3cret&code=c"))
			var rr *discovery.RedirectRefusedError
			if !errors.As(err, &rr) || !strings.Contains(err.Error(), "the broker follows no redirects on upstream calls") {
				if resp != nil {
					_ = resp.Body.Close()
				}
				t.Fatalf("err %v, want the redirect refused", err)
			}
			if rr.To != tc.target(self) {
				t.Errorf("refusal names %q, want %q", rr.To, tc.target(self))
			}
			if n := internal.hits.Load(); n != 0 {
				t.Fatalf("the internal server received %d requests", n)
			}
		})
	}
}

// TestUpstreamClientConnectsDirectlyWithoutProxy: a proxy would make the connection for the
// broker (the address policy would only see the proxy), so the upstream client never uses
// one, not even one its base transport names.
func TestUpstreamClientConnectsDirectlyWithoutProxy(t *testing.T) {
	proxy := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "proxied", http.StatusBadGateway) })
	idp := newCountingServer(t, nil)
	pu, _ := url.Parse(proxy.URL)
	base := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	c, err := upstreamClient(base, upstreamHTTPOptions{timeout: 5 * time.Second, policy: loopbackPolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	resp, err := c.Get(idp.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || idp.hits.Load() != 1 || proxy.hits.Load() != 0 {
		t.Fatalf("status %d, idp %d requests, proxy %d: want the request straight to the IdP", resp.StatusCode, idp.hits.Load(), proxy.hits.Load())
	}
}

// TestUpstreamClientRefusesTransportsItCannotGuard: a base client (Deps.HTTPClient) whose
// transport the broker cannot give its dialer would skip the address policy: refused.
func TestUpstreamClientRefusesTransportsItCannotGuard(t *testing.T) {
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("unused") })
	if _, err := upstreamClient(&http.Client{Transport: rt}, upstreamHTTPOptions{timeout: time.Second}); !errors.Is(err, errUpstreamTransport) {
		t.Fatalf("err %v, want errUpstreamTransport", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRebindingHostnameIsRefusedAtConnect: a host name that resolves to an allowed address and
// then to a forbidden one is refused when the second address is dialled, because the check
// runs on the address being connected to, after DNS.
func TestRebindingHostnameIsRefusedAtConnect(t *testing.T) {
	idp := httptest.NewUnstartedServer(nil)
	idp.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "{}") })
	idp.Config.SetKeepAlivesEnabled(false) // every request dials (and so resolves) again
	idp.Start()
	defer idp.Close()
	_, port, _ := net.SplitHostPort(idp.Listener.Addr().String())
	dns := newFakeDNS(t, "idp.rebind.test", "127.0.0.1")
	policy, err := newEgressPolicy([]string{"127.0.0.1/32"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := upstreamClient(nil, upstreamHTTPOptions{timeout: 10 * time.Second, policy: policy, resolver: dns.resolver()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	u := "http://idp.rebind.test:" + port + "/.well-known/openid-configuration"

	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("first lookup (127.0.0.1, allowed): %v", err)
	}
	_ = resp.Body.Close()

	dns.set("127.0.0.2") // the attacker's DNS now answers with an internal address
	_, err = c.Get(u)
	var re *AddressRefusedError
	if !errors.As(err, &re) || re.Addr != netip.MustParseAddr("127.0.0.2") || re.Reason != "loopback" {
		t.Fatalf("after rebinding: err %v, want the address policy's refusal of 127.0.0.2", err)
	}
	if dns.queries.Load() < 2 {
		t.Fatalf("the name was looked up %d times; the test needs a lookup per request", dns.queries.Load())
	}
}

// fakeDNS answers A queries for one host name with a switchable address (other names:
// NXDOMAIN; AAAA: no records) over in-memory connections handed to a net.Resolver's Dial, so
// tests can make a name resolve differently from one lookup to the next (DNS rebinding)
// without a socket or the system's resolver. The messages follow RFC 1035 §4.1 over a stream
// (RFC 1035 §4.2.2: two-byte length prefix), as Go's resolver speaks to a non-packet conn.
type fakeDNS struct {
	t       testing.TB
	host    string // lower case, with the trailing dot
	addr    atomic.Pointer[netip.Addr]
	queries atomic.Int64 // A queries for host
}

func newFakeDNS(t testing.TB, host, addr string) *fakeDNS {
	d := &fakeDNS{t: t, host: strings.ToLower(host) + "."}
	d.set(addr)
	return d
}

func (d *fakeDNS) set(addr string) {
	a := netip.MustParseAddr(addr)
	d.addr.Store(&a)
}

func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go d.serve(server)
		return client, nil
	}}
}

func (d *fakeDNS) serve(c net.Conn) {
	defer c.Close()
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := d.answer(q)
		if resp == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
			return
		}
	}
}

// answer returns the response to query q, or nil when q cannot be read.
func (d *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	name := strings.ToLower(strings.Join(labels, ".")) + "."
	// ID, then QR + RD + RA and NOERROR (NXDOMAIN for other names), one question.
	resp := []byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}
	if name != d.host {
		resp[3] = 0x83
	}
	resp = append(resp, q[12:i+4]...)
	if name == d.host && qtype == 1 { // A
		d.queries.Add(1)
		a := d.addr.Load().As4()
		resp[7] = 1 // ANCOUNT
		// Name: pointer to the question's name; type A, class IN, TTL 0, 4 bytes of data.
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4)
		resp = append(resp, a[:]...)
	}
	return resp
}

// testCert returns a self-signed certificate for host (a DNS name or an IP address), made at
// run time, and a pool that trusts it.
func testCert(t testing.TB, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
