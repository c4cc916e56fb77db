package broker

import "net/http"

// hostPrefix is the cookie-name prefix that makes a browser accept a cookie only when it is
// Secure, has Path=/ and no Domain (RFC 6265bis §4.1.3.2): a sibling subdomain or a plain
// http page on the same host can then neither set nor shadow the broker's cookies.
const hostPrefix = "__Host-"

// cookieName is the name of the broker cookie base (txCookie, sessionCookie): with the
// __Host- prefix when the public URL is https, as is over http (loopback development, where
// browsers refuse Secure cookies). Every reader and writer of a broker cookie goes through it.
func (s *Server) cookieName(base string) string {
	if s.secure {
		return hostPrefix + base
	}
	return base
}

// cookieScope is the Path of a broker cookie meant for path: "/" over https (__Host-
// requires it), else path below the public URL's path.
func (s *Server) cookieScope(path string) string {
	if s.secure {
		return "/"
	}
	return s.cookiePath(path)
}

// brokerCookie is the cookie base with value for path, HttpOnly, SameSite=Lax, Secure over
// https, no Domain. maxAge < 0 deletes it.
func (s *Server) brokerCookie(base, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: s.cookieName(base), Value: value, Path: s.cookieScope(path), MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	}
}

// readCookie returns this request's broker cookie base.
func (s *Server) readCookie(r *http.Request, base string) (*http.Cookie, error) {
	return r.Cookie(s.cookieName(base))
}
