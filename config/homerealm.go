package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
)

// Home-realm discovery: options.domain_aliases route a user to a connection by the domain of
// the email address (login_hint, or the broker's identifier-first page); show_as_button and
// options.icon_url shape the connection's button on the sign-in pages.

// MaxDomainAliases bounds options.domain_aliases of one connection (the broker compares an
// email's domain with every alias of the connections an app may use).
const MaxDomainAliases = 1000

// maxIconURLBytes bounds options.icon_url.
const maxIconURLBytes = 2048

// dnsLabel is one LDH label of a host name (RFC 1035 §2.3.1, RFC 1123 §2.1).
var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// EmailDomain returns the domain of an email address in lower case, or "" when s is not
// local@domain with a non-empty local part and a domain DomainProblem accepts. The domain is
// what follows the last '@'; one trailing dot is dropped.
func EmailDomain(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || len(s) > 320 || strings.ContainsAny(s, " \t\r\n") {
		return ""
	}
	d := strings.ToLower(strings.TrimSuffix(s[at+1:], "."))
	if DomainProblem(d) != "" {
		return ""
	}
	return d
}

// DomainProblem returns why d is not a domain name that email addresses can use (ASCII: an
// internationalized domain in its xn-- form), or "".
func DomainProblem(d string) string {
	if d == "" || len(d) > 253 {
		return "must be a domain name of 1 to 253 characters"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "must be a domain name with at least two labels, such as example.com"
	}
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return "must be a domain name: labels of letters, digits and '-' (an internationalized domain in its xn-- form), no wildcards"
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "must be a domain name, not an IP address"
	}
	return ""
}

// ButtonShown reports whether the connection is shown as a button on the sign-in pages
// (show_as_button, default true).
func (c *Connection) ButtonShown() bool { return c.ShowAsButton == nil || *c.ShowAsButton }

// HasDomainAlias reports whether domain (lower case) is one of the connection's
// domain_aliases, compared without regard to case.
func (c *Connection) HasDomainAlias(domain string) bool {
	for _, a := range c.Options.DomainAliases {
		if strings.EqualFold(a, domain) {
			return true
		}
	}
	return false
}

// iconHost is the host (and port) an icon URL may name: a DNS name, an IPv4 address or a
// bracketed IPv6 address. It is stricter than url.Parse, which admits sub-delimiters such as
// ';' in a host: the host ends up in the sign-in pages' Content-Security-Policy.
var iconHost = regexp.MustCompile(`^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`)

// IconOrigin returns scheme://host[:port] of an icon URL that IconURLProblem accepts, or "".
func IconOrigin(raw string) string {
	if IconURLProblem(raw) != "" {
		return ""
	}
	u, _ := url.Parse(raw) // parsed by IconURLProblem
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

// IconURLProblem returns why raw cannot be a connection's icon_url, or "": the browser loads
// it from the sign-in pages, so it must be an absolute https URL (plain http only on a
// loopback host), without user information.
func IconURLProblem(raw string) string {
	if len(raw) > maxIconURLBytes {
		return fmt.Sprintf("must be at most %d bytes", maxIconURLBytes)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Opaque != "":
		return "must be an absolute https URL"
	case u.Scheme != "https" && u.Scheme != "http":
		return "must be an https URL"
	case insecureHTTP(u):
		return "must use https (plain http only on a loopback host: 127.0.0.1, [::1] or localhost)"
	case u.User != nil:
		return "must not contain user information"
	case !iconHost.MatchString(u.Host):
		return "must name a host: a domain name or an IP address, with an optional port"
	}
	return ""
}

// homeRealm checks show_as_button, options.domain_aliases and options.icon_url of one
// connection (p is "connections[i]." or "" for a management API body).
func (v *validator) homeRealm(p string, cc *Connection) {
	aliases := cc.Options.DomainAliases
	if len(aliases) > MaxDomainAliases {
		v.add(p+"options.domain_aliases", "must list at most %d domains", MaxDomainAliases)
		return
	}
	seen := make(map[string]int, len(aliases))
	for j, a := range aliases {
		key := fmt.Sprintf("%soptions.domain_aliases[%d]", p, j)
		if why := DomainProblem(a); why != "" {
			v.add(key, "%q %s", logs.Clip(a, 80), why)
			continue
		}
		if k, dup := seen[strings.ToLower(a)]; dup {
			v.add(key, "%q is listed twice (also domain_aliases[%d])", a, k)
			continue
		}
		seen[strings.ToLower(a)] = j
	}
	if icon := cc.Options.IconURL; icon != "" {
		if why := IconURLProblem(icon); why != "" {
			v.add(p+"options.icon_url", "%q %s", logs.Clip(icon, 80), why)
		}
	}
}

// sharedDomainAliases refuses a domain alias listed by two connections: an email's domain
// must name one connection.
func (v *validator) sharedDomainAliases(conns []Connection) {
	owner := map[string]int{}
	for i := range conns {
		for j, a := range conns[i].Options.DomainAliases {
			k := strings.ToLower(a)
			if DomainProblem(k) != "" {
				continue // reported by homeRealm
			}
			if o, dup := owner[k]; dup && o != i {
				v.add(fmt.Sprintf("connections[%d].options.domain_aliases[%d]", i, j),
					"%q is also a domain alias of connections[%d] (%s): an email domain must lead to one connection", a, o, conns[o].Name)
				continue
			}
			owner[k] = i
		}
	}
}
