package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
)

// The upstream address policy: every connection the broker opens toward an upstream IdP
// (discovery, JWKS, token, userinfo) is checked when it is dialled, against the IP address
// actually being connected to (after DNS). Internal addresses (loopback, private, link-local
// and cloud metadata, CGNAT, unique-local, multicast, …, also in IPv4-mapped and embedded
// forms) are refused unless they lie in upstream_allowed_networks. Because the check runs on
// the socket's address and not on a host name looked up beforehand, a host name that resolves
// to a public address once and to an internal one the next time (DNS rebinding) gains nothing.

// AddressRefusedError says that a connection to an upstream was refused by the address
// policy before it was made.
type AddressRefusedError struct {
	Addr   netip.Addr // the address the dialer was about to connect to (invalid when unparsable)
	Reason string     // the kind of address, e.g. "loopback" or "link-local (cloud metadata)"
	// Setting is the key that would allow it: "" for upstream_allowed_networks, else a log
	// stream's allowed_networks (logstreams.go).
	Setting string
}

func (e *AddressRefusedError) Error() string {
	what, setting := "upstream connection", "upstream_allowed_networks"
	if e.Setting != "" {
		what, setting = "connection", e.Setting
	}
	if !e.Addr.IsValid() {
		return what + " refused: " + e.Reason
	}
	return fmt.Sprintf("%s to %s refused: %s address, not in %s", what, e.Addr, e.Reason, setting)
}

// blockedNetworks are the address ranges upstream connections may not reach unless allowed.
// IPv4-mapped IPv6 addresses are unmapped before they are matched; other IPv6 forms that embed
// an IPv4 address are checked by embeddedIPv4.
var blockedNetworks = func() []blockedNetwork {
	var out []blockedNetwork
	for _, b := range []struct{ cidr, reason string }{
		{"0.0.0.0/8", `unspecified ("this network")`},
		{"10.0.0.0/8", "private (RFC 1918)"},
		{"100.64.0.0/10", "shared CGNAT (RFC 6598)"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local (cloud metadata)"},
		{"172.16.0.0/12", "private (RFC 1918)"},
		{"192.0.0.0/24", "IETF protocol assignment (RFC 6890)"},
		{"192.0.2.0/24", "documentation (RFC 5737)"},
		{"192.88.99.0/24", "6to4 relay anycast (RFC 7526)"},
		{"192.168.0.0/16", "private (RFC 1918)"},
		{"198.18.0.0/15", "benchmarking (RFC 2544)"},
		{"198.51.100.0/24", "documentation (RFC 5737)"},
		{"203.0.113.0/24", "documentation (RFC 5737)"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved or broadcast"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible (deprecated, RFC 4291)"},
		{"64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"},
		{"100::/64", "discard-only (RFC 6666)"},
		{"2001::/32", "Teredo (RFC 4380)"},
		{"2001:db8::/32", "documentation (RFC 3849)"},
		{"fc00::/7", "unique-local (cloud metadata fd00:ec2::254 included)"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local (deprecated)"},
		{"ff00::/8", "multicast"},
	} {
		out = append(out, blockedNetwork{netip.MustParsePrefix(b.cidr), b.reason})
	}
	return out
}()

type blockedNetwork struct {
	prefix netip.Prefix
	reason string
}

// IPv6 ranges whose addresses carry an IPv4 address, with the offset of its four bytes.
var embeddingNetworks = []struct {
	prefix netip.Prefix
	offset int
	name   string
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12, "NAT64"},              // RFC 6052
	{netip.MustParsePrefix("::ffff:0:0:0/96"), 12, "IPv4-translated"}, // RFC 2765
	{netip.MustParsePrefix("2002::/16"), 2, "6to4"},                   // RFC 3056
}

// embeddedIPv4 returns the IPv4 address a NAT64, IPv4-translated or 6to4 address carries.
func embeddedIPv4(a netip.Addr) (netip.Addr, string, bool) {
	for _, e := range embeddingNetworks {
		if e.prefix.Contains(a) {
			b := a.As16()
			return netip.AddrFrom4([4]byte(b[e.offset : e.offset+4])), e.name, true
		}
	}
	return netip.Addr{}, "", false
}

// internalReason returns why a (unmapped, without zone) may not be reached, or "" when it is
// a public unicast address.
func internalReason(a netip.Addr) string {
	for _, b := range blockedNetworks {
		if b.prefix.Contains(a) {
			return b.reason
		}
	}
	if v4, kind, ok := embeddedIPv4(a); ok {
		if r := internalReason(v4); r != "" {
			return fmt.Sprintf("%s (%s embedded in %s)", r, v4, kind)
		}
	}
	return ""
}

// egressPolicy decides which addresses upstream connections may reach.
type egressPolicy struct {
	allowed []netip.Prefix // upstream_allowed_networks
	setting string         // the key of allowed in refusals ("": upstream_allowed_networks)
}

// newEgressPolicy parses upstream_allowed_networks (CIDRs or single addresses).
func newEgressPolicy(networks []string) (*egressPolicy, error) {
	p := &egressPolicy{}
	for i, n := range networks {
		pfx, err := config.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("upstream_allowed_networks[%d]: %w", i, err)
		}
		p.allowed = append(p.allowed, pfx)
	}
	return p, nil
}

// check returns nil when a may be connected to, else an *AddressRefusedError. An address in
// upstream_allowed_networks is allowed; otherwise only public unicast addresses are.
func (p *egressPolicy) check(a netip.Addr) error {
	if !a.IsValid() {
		return &AddressRefusedError{Reason: "the address could not be read"}
	}
	// A zone would make every prefix miss (netip.Prefix.Contains), and an IPv4-mapped
	// address is an IPv4 connection: match what is actually reached.
	a = a.WithZone("").Unmap()
	for _, pfx := range p.allowed {
		if pfx.Contains(a) {
			return nil
		}
	}
	if r := internalReason(a); r != "" {
		return &AddressRefusedError{Addr: a, Reason: r, Setting: p.setting}
	}
	return nil
}

// control is the dialer's ControlContext: it runs after DNS, for each address the dialer
// tries, before the connection is made.
func (p *egressPolicy) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return &AddressRefusedError{Reason: "network " + network + " is not used for upstream calls"}
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &AddressRefusedError{Reason: fmt.Sprintf("the address %q could not be read", address)}
	}
	return p.check(ap.Addr())
}

// dialer returns the dialer of upstream connections: the policy checks every address it
// connects to; resolver (nil: the system's) looks host names up.
func (p *egressPolicy) dialer(resolver *net.Resolver) *net.Dialer {
	return &net.Dialer{
		Timeout:        30 * time.Second, // as http.DefaultTransport; the client's timeout is shorter
		KeepAlive:      30 * time.Second,
		Resolver:       resolver,
		ControlContext: p.control,
	}
}

// errUpstreamTransport is returned by New for a Deps.HTTPClient whose transport the broker
// cannot equip with its dialer.
var errUpstreamTransport = errors.New("Deps.HTTPClient.Transport must be nil or an *http.Transport: the broker installs its own dialer (the upstream address policy) on it")
