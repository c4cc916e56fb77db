package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// Pushed authorization requests (RFC 9126): the authorization request Begin built is POSTed
// to the upstream's pushed_authorization_request_endpoint with the connection's client
// authentication and, when DPoP is on, a DPoP proof of the broker's key (RFC 9449 §10.1, so the
// code is bound to that key from the start; use_dpop_nonce is answered as at the token
// endpoint). The browser then carries only client_id and the returned request_uri.

// CodePARNotSupported: PAR is wanted (options.use_par) but the upstream's discovery has no
// pushed_authorization_request_endpoint.
const CodePARNotSupported = "par_not_supported"

// CodePARBusy: the connection already has MaxPushesInFlight pushed authorization requests
// open; the login is refused at once rather than queued.
const CodePARBusy = "par_busy"

// DefaultMaxPushesInFlight is Options.MaxPushesInFlight when left zero. Each push is a
// credentialed request in the broker's name (client authentication, DPoP proof): however
// many browsers start logins, one connection keeps at most this many open at once.
const DefaultMaxPushesInFlight = 64

// parBusyRetry is the Retry-After of a par_busy refusal: pushes finish within the HTTP
// timeout, most far sooner.
const parBusyRetry = time.Second

// maxPARResponse bounds the pushed authorization response body that is read.
const maxPARResponse = 64 << 10

// maxRequestURI bounds the request_uri accepted from the upstream (it goes into the browser's
// URL).
const maxRequestURI = 2048

// usePAR reports whether authorization requests to the upstream of doc are pushed.
func (c *Connection) usePAR(doc *discovery.Document) bool {
	return c.cfg.UsePAR || doc.RequirePushedAuthorizationRequests
}

// CheckPAR reports why the upstream of doc cannot take pushed authorization requests, or nil.
func CheckPAR(doc *discovery.Document) error {
	if doc.PushedAuthorizationRequestEndpoint == "" {
		return fmt.Errorf("upstream %s does not support pushed authorization requests: its discovery document has no pushed_authorization_request_endpoint (RFC 9126 §5)", doc.Issuer)
	}
	return nil
}

// push sends the authorization request of st (its AuthURL's parameters) to the upstream's PAR
// endpoint and replaces st.AuthURL with the authorization endpoint carrying only client_id and
// request_uri (RFC 9126 §4).
func (c *Connection) push(ctx context.Context, doc *discovery.Document, st *Start, method string) error {
	if err := CheckPAR(doc); err != nil {
		return &Error{Code: CodePARNotSupported, Description: err.Error(), Err: err}
	}
	au, err := url.Parse(st.AuthURL)
	if err != nil {
		return &Error{Code: CodeUpstreamError, Description: "pushed authorization request: the authorization URL does not parse", Err: err}
	}
	select {
	case c.pushes <- struct{}{}:
		defer func() { <-c.pushes }()
	default:
		return &Error{Code: CodePARBusy, RetryAfter: parBusyRetry,
			Description: fmt.Sprintf("pushed authorization request not sent: %d are already in flight to this upstream (the bound per connection)", cap(c.pushes))}
	}
	form := au.Query()
	hc := c.plain
	if st.DPoPAlg != "" {
		if hc = c.clients[st.DPoPAlg]; hc == nil {
			return &Error{Code: CodeDPoPAlgMismatch, Description: fmt.Sprintf("no DPoP signer for wire alg %s", st.DPoPAlg)}
		}
	}
	// A client assertion names the endpoint it is sent to, as at the token endpoint: RFC 9126
	// §2 makes every authorization server accept it (with the issuer and the token endpoint),
	// and it is what Okta asks for ("the full URL of the resource" the JWT authenticates to).
	pctx, hdr := c.authenticate(ctx, form, method, doc.PushedAuthorizationRequestEndpoint)
	var trace dpop.Trace
	if st.DPoPAlg != "" {
		pctx = dpop.WithTrace(pctx, &trace)
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, doc.PushedAuthorizationRequestEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return &Error{Code: CodeUpstreamError, Description: "pushed authorization request: " + err.Error(), Err: err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return requestError("pushed authorization request", err, c.opts.HTTP.Timeout)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPARResponse+1))
	if err != nil {
		return &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("pushed authorization request: reading the answer: %v", err), Err: err}
	}
	if len(body) > maxPARResponse {
		return &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("pushed authorization request: the answer is larger than %d bytes", maxPARResponse)}
	}
	requestURI, err := parResponse(resp, body)
	if err != nil {
		var ue *Error
		if st.DPoPAlg == "" && errors.As(err, &ue) {
			noProofSent(ue)
		}
		return err
	}
	// The authorization endpoint's own query (RFC 6749 §3.1) stays; client_id and request_uri
	// are all the browser carries.
	target, err := url.Parse(doc.AuthorizationEndpoint)
	if err != nil {
		return &Error{Code: CodeUpstreamError, Description: "authorization_endpoint does not parse", Err: err}
	}
	q := target.Query()
	q.Set("client_id", c.cfg.ClientID)
	q.Set("request_uri", requestURI)
	target.RawQuery = q.Encode()
	st.AuthURL = target.String()
	st.PAR = true
	return nil
}

// parResponse reads a pushed authorization response (RFC 9126 §2.2, §2.3): 201 (200 is
// accepted too) with a JSON request_uri and a positive expires_in, or an error.
func parResponse(resp *http.Response, body []byte) (string, error) {
	var out struct {
		RequestURI       string          `json:"request_uri"`
		ExpiresIn        json.RawMessage `json:"expires_in"`
		Error            string          `json:"error"`
		ErrorDescription string          `json:"error_description"`
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	jsonErr := json.Unmarshal(body, &out)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		desc := fmt.Sprintf("pushed authorization request answered HTTP %d", resp.StatusCode)
		if jsonErr != nil || out.Error == "" {
			return "", &Error{Code: CodeUpstreamError, Description: desc}
		}
		oerr := clipText(out.Error, 200)
		desc += fmt.Sprintf(" error=%q", oerr)
		if out.ErrorDescription != "" {
			desc += fmt.Sprintf(" error_description=%q", clipText(out.ErrorDescription, 200))
		}
		return "", &Error{Code: oauthErrorCode(oerr), OAuthError: oerr, Description: desc}
	}
	if mt != "application/json" || jsonErr != nil {
		return "", &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("pushed authorization request answered HTTP %d without a JSON object (Content-Type %q)", resp.StatusCode, resp.Header.Get("Content-Type"))}
	}
	var exp float64
	if json.Unmarshal(out.ExpiresIn, &exp) != nil || exp <= 0 {
		return "", &Error{Code: CodeUpstreamError, Description: "pushed authorization response has no positive expires_in (RFC 9126 §2.2)"}
	}
	if out.RequestURI == "" || len(out.RequestURI) > maxRequestURI || strings.ContainsFunc(out.RequestURI, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return "", &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("pushed authorization response has no usable request_uri (present: %t, %d bytes; at most %d visible ASCII characters)", out.RequestURI != "", len(out.RequestURI), maxRequestURI)}
	}
	return out.RequestURI, nil
}
