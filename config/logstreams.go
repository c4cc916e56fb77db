package config

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// LogStream is one entry of log_streams: the event log sent to an HTTP endpoint in batches,
// at least once (package logstream; the README's "Log streams" shows the requests).
type LogStream struct {
	// Name identifies the stream and its position in the store: keep it when the URL changes,
	// change it to start over.
	Name string        `yaml:"name"`
	URL  string        `yaml:"url"`
	Auth LogStreamAuth `yaml:"auth"`
	// Types are the event types sent (s, f, …); empty: every type.
	Types []string `yaml:"types"`
	// BatchSize is how many events one read takes (1 to 100, default 50).
	BatchSize int `yaml:"batch_size"`
	// Start is where a stream with no stored position begins: latest (default: events after
	// its first start) or oldest (every retained event).
	Start string `yaml:"start"`
	// Timeout bounds one request (default 10s, at most 1m); MaxBackoff caps the wait between
	// retries (default 1m, 1s to 1h).
	Timeout    time.Duration `yaml:"timeout"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// LateWindow is how late an event may reach the store and still be sent (default 1m, 5s
	// to 1h; logstream.Stream.LateWindow): it must exceed the replicas' clock skew plus the
	// longest store write (store.redis.timeout). A new holder sends again up to this much.
	LateWindow time.Duration `yaml:"late_window"`
	// AllowedNetworks are the internal networks (CIDRs or addresses) the endpoint may be on:
	// like upstream calls, the stream connects only to public addresses otherwise.
	AllowedNetworks []string `yaml:"allowed_networks"`
}

// LogStreamAuth is how a stream's requests authenticate: a bearer token, or an HMAC
// signature (Standard Webhooks).
type LogStreamAuth struct {
	Type   string `yaml:"type"`   // bearer | hmac
	Token  string `yaml:"token"`  // bearer: sent as Authorization: Bearer TOKEN
	Secret string `yaml:"secret"` // hmac: whsec_ and the base64 of 24 to 64 random bytes
}

// Kinds of log_streams[].auth.type.
const (
	LogStreamBearer = "bearer"
	LogStreamHMAC   = "hmac"
)

// Bounds of a log stream's settings.
const (
	minLogStreamToken     = 16
	minLogStreamSecret    = 24 // bytes, as Standard Webhooks asks
	maxLogStreamSecret    = 64
	maxLogStreamTimeout   = time.Minute
	maxLogStreamBackoff   = time.Hour
	minLogStreamLate      = 5 * time.Second
	maxLogStreamLate      = time.Hour
	logStreamSecretPrefix = "whsec_"
)

var logStreamNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// applyDefaults fills batch_size, start, timeout, max_backoff and late_window.
func (s *LogStream) applyDefaults() {
	if s.BatchSize == 0 {
		s.BatchSize = 50
	}
	if s.Start == "" {
		s.Start = "latest"
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = time.Minute
	}
	if s.LateWindow == 0 {
		s.LateWindow = time.Minute
	}
}

// HMACKey returns the key of an hmac stream: the bytes the secret encodes (nil otherwise or
// when it is malformed, which Validate reports).
func (a *LogStreamAuth) HMACKey() []byte {
	if a.Type != LogStreamHMAC {
		return nil
	}
	b64, ok := strings.CutPrefix(a.Secret, logStreamSecretPrefix)
	if !ok {
		return nil
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil
	}
	return key
}

// logStreams validates log_streams.
func (v *validator) logStreams(c *Config) {
	names := map[string]int{}
	for i := range c.LogStreams {
		s := &c.LogStreams[i]
		p := fmt.Sprintf("log_streams[%d]", i)
		switch j, dup := names[s.Name]; {
		case s.Name == "":
			v.add(p+".name", "is required")
		case !logStreamNameRE.MatchString(s.Name):
			v.add(p+".name", "%q must be 1 to 64 letters, digits, '-' and '_', starting with a letter or digit", s.Name)
		case dup:
			v.add(p+".name", "duplicate name (also log_streams[%d]): the name keys the stream's position in the store", j)
		default:
			names[s.Name] = i
		}
		if s.URL == "" {
			v.add(p+".url", "is required")
		} else if msg := backchannelLogoutURIProblem(s.URL, c.AllowInsecureHTTP); msg != "" {
			v.add(p+".url", "%s", msg)
		}
		v.logStreamAuth(p+".auth", &s.Auth)
		for j, t := range s.Types {
			switch {
			case logs.Description(t) == "":
				v.add(fmt.Sprintf("%s.types[%d]", p, j), "%q is not an event type the broker writes (such as s, f, seacft, slo, sapi, fapi)", t)
			case slices.Index(s.Types, t) < j:
				v.add(fmt.Sprintf("%s.types[%d]", p, j), "%q is listed twice", t)
			}
		}
		if s.BatchSize < 1 || s.BatchSize > logs.MaxTake {
			v.add(p+".batch_size", "must be between 1 and %d", logs.MaxTake)
		}
		if s.Start != "latest" && s.Start != "oldest" {
			v.add(p+".start", "%q must be latest (events after the stream's first start) or oldest (every retained event)", s.Start)
		}
		if s.Timeout <= 0 || s.Timeout > maxLogStreamTimeout {
			v.add(p+".timeout", "must be a positive duration of at most %s", maxLogStreamTimeout)
		}
		if s.MaxBackoff < time.Second || s.MaxBackoff > maxLogStreamBackoff {
			v.add(p+".max_backoff", "must be between 1s and %s", maxLogStreamBackoff)
		}
		if s.LateWindow < minLogStreamLate || s.LateWindow > maxLogStreamLate {
			v.add(p+".late_window", "must be between %s and %s (above the replicas' clock skew plus the store's write timeout)", minLogStreamLate, maxLogStreamLate)
		}
		var allowed []netip.Prefix
		for j, n := range s.AllowedNetworks {
			pr, err := ParsePrefix(n)
			if err != nil {
				v.add(fmt.Sprintf("%s.allowed_networks[%d]", p, j), "%v", err)
			}
			allowed = append(allowed, pr)
		}
		if a, ok := internalStreamHost(s.URL); ok && !slices.ContainsFunc(allowed, func(pr netip.Prefix) bool { return pr.Contains(a) }) {
			v.add(p+".url", "is on %s, an internal address the broker's address policy refuses: list it under %s.allowed_networks (such as %s/%d)",
				a, p, a, a.BitLen())
		}
	}
}

// internalStreamHost returns the address of a stream URL whose host is an IP literal that the
// broker's upstream address policy refuses unless a stream's allowed_networks lists it
// (loopback, private, link-local, unspecified), so that config validate says so instead of
// every delivery failing. A name (localhost, an internal DNS name) is checked when dialled.
func internalStreamHost(raw string) (netip.Addr, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified()
}

// logStreamAuth validates log_streams[].auth.
func (v *validator) logStreamAuth(p string, a *LogStreamAuth) {
	switch a.Type {
	case LogStreamBearer:
		switch {
		case len(a.Token) < minLogStreamToken:
			v.add(p+".token", "must be at least %d characters (got %d); keep it in the environment: token: ${VAR}", minLogStreamToken, len(a.Token))
		case strings.ContainsFunc(a.Token, func(r rune) bool { return r < 0x21 || r > 0x7e }):
			v.add(p+".token", "must be visible ASCII characters without spaces")
		}
		if a.Secret != "" {
			v.add(p+".secret", "is for type hmac only")
		}
	case LogStreamHMAC:
		if a.Token != "" {
			v.add(p+".token", "is for type bearer only")
		}
		key := a.HMACKey()
		switch {
		case a.Secret == "":
			v.add(p+".secret", "is required; generate one with: echo whsec_$(openssl rand -base64 32), and keep it in the environment: secret: ${VAR}")
		case !strings.HasPrefix(a.Secret, logStreamSecretPrefix) || key == nil:
			v.add(p+".secret", "must be %q followed by standard base64 (echo whsec_$(openssl rand -base64 32))", logStreamSecretPrefix)
		case len(key) < minLogStreamSecret || len(key) > maxLogStreamSecret:
			v.add(p+".secret", "must encode %d to %d bytes (got %d)", minLogStreamSecret, maxLogStreamSecret, len(key))
		}
	case "":
		v.add(p+".type", "is required: bearer (auth.token) or hmac (auth.secret): a stream's requests always authenticate")
	default:
		v.add(p+".type", "%q must be bearer or hmac", a.Type)
	}
}
