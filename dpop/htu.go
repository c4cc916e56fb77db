package dpop

import (
	"errors"
	"net/url"
	"strings"
)

// NormalizeHTU returns the comparison form of an htu or endpoint URL (RFC 9449 §4.3): RFC 3986
// syntax- and scheme-based normalization — lower-case scheme and host, default port dropped,
// percent-encoding of unreserved characters decoded and other escapes in upper case, dot
// segments removed, empty path as "/" — with query and fragment dropped. Only absolute http
// and https URLs are accepted.
func NormalizeHTU(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("dpop: htu is not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("dpop: htu must be an http or https URL")
	}
	if u.Host == "" || u.Opaque != "" {
		return "", errors.New("dpop: htu must be absolute")
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", errors.New("dpop: htu has no host")
	}
	host = strings.ToLower(host)
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	var b strings.Builder
	b.Grow(len(raw) + 8)
	b.WriteString(scheme)
	b.WriteString("://")
	if u.User != nil {
		b.WriteString(u.User.String())
		b.WriteByte('@')
	}
	if strings.IndexByte(host, ':') >= 0 {
		b.WriteString("[" + host + "]")
	} else {
		b.WriteString(host)
	}
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	p := normalizeEscapes(u.EscapedPath())
	p = removeDotSegments(p)
	if p == "" {
		p = "/"
	}
	b.WriteString(p)
	return b.String(), nil
}

// normalizeEscapes decodes %XX of unreserved characters and upper-cases the hex of the others
// (RFC 3986 §6.2.2.1, §6.2.2.2). url.Parse has already rejected malformed escapes.
func normalizeEscapes(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' || i+2 >= len(p) {
			b.WriteByte(c)
			continue
		}
		hi, lo := unhex(p[i+1]), unhex(p[i+2])
		if hi < 0 || lo < 0 {
			b.WriteByte(c)
			continue
		}
		d := byte(hi<<4 | lo)
		if isUnreserved(d) {
			b.WriteByte(d)
		} else {
			const hexUpper = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexUpper[d>>4])
			b.WriteByte(hexUpper[d&15])
		}
		i += 2
	}
	return b.String()
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments applies RFC 3986 §5.2.4 to an absolute path.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if strings.HasPrefix(p, "/") && !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}
