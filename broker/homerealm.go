package broker

import (
	"context"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
)

// Home-realm discovery: which connection a login uses when the app may use several and names
// none (no connection= parameter). When one of them has options.domain_aliases, the email
// address decides: the app's login_hint (OIDC Core §3.1.2.1) when it is an address whose
// domain is an alias of exactly one of them (no page at all), else the address the user types
// on the identifier-first page. An address whose domain no connection claims gets the
// connection chooser: the connections with show_as_button (default true), each with its
// display_name and options.icon_url. Without any domain alias the chooser comes at once, as
// before. The pages are rendered here, escaped by html/template, and load nothing but the
// icons, whose origins are the only ones their Content-Security-Policy admits.

// signInPage is the identifier-first page or the connection chooser.
type signInPage struct {
	Title, Message string
	// Error says why the address was not used (shown above the form, role=alert).
	Error string
	// Identifier is the email form; nil on the chooser.
	Identifier *identifierForm
	Buttons    []connButton
	// Other leads back to the identifier-first page (another address); "" for none.
	Other string
	// imgOrigins are the origins of the buttons' icons, for img-src.
	imgOrigins []string
}

// identifierForm asks for the email address: a GET to /authorize that repeats the app's
// request (Fields) and adds the address as login_hint, so the answer is routed like an app's
// login_hint.
type identifierForm struct {
	Action string
	Fields []pageField
	Email  string
}

// connButton is one connection on a sign-in page: a link to /authorize with connection=.
type connButton struct {
	ID, URL, Label, Icon string
}

var signInTmpl = template.Must(template.New("signin").Parse(pageHead + `body{color:#1d2430}
main{width:100%;max-width:24rem}
label{display:block;font-weight:600;margin-bottom:.35rem}
input{box-sizing:border-box;width:100%;font-size:1rem;padding:.55rem .7rem;border:1px solid #8a93a3;border-radius:4px}
input:focus-visible{outline:3px solid #8fb3f5;outline-offset:1px}
button{margin-top:.9rem;width:100%;font-size:1rem;padding:.6rem 1.6rem;border:0;border-radius:4px;background:#2d6cdf;color:#fff;cursor:pointer}
button:focus-visible,a:focus-visible{outline:3px solid #8fb3f5;outline-offset:2px}
#error{background:#fdecea;color:#8a1c12;border-radius:4px;padding:.5rem .7rem}
.or{text-align:center;color:#5b6475;margin:1.2rem 0 .6rem}
ul{list-style:none;padding:0;margin:0}
li{margin:.5rem 0}
a.connection{display:flex;align-items:center;gap:.7rem;padding:.6rem 1rem;border:1px solid #c5c9d0;border-radius:4px;color:#1d2430;text-decoration:none}
a.connection:hover{background:#f0f4fc}
a.connection img{width:1.5rem;height:1.5rem;object-fit:contain}
#other{display:inline-block;margin-top:1rem;color:#2d6cdf}
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
{{if .Message}}<p id="message">{{.Message}}</p>{{end}}
{{if .Error}}<p id="error" role="alert">{{.Error}}</p>{{end}}
{{with .Identifier}}<form id="identifier" method="get" action="{{.Action}}">
{{range .Fields}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label for="email">Email address</label>
<input id="email" name="login_hint" type="email" inputmode="email" autocomplete="username" required maxlength="320" autofocus value="{{.Email}}"{{if $.Error}} aria-describedby="error" aria-invalid="true"{{end}}>
<button id="continue" type="submit">Continue</button>
</form>
{{if $.Buttons}}<p class="or">or sign in with</p>{{end}}{{end}}
{{if .Buttons}}<ul id="connections">
{{range .Buttons}}<li><a class="connection" id="{{.ID}}" href="{{.URL}}">{{if .Icon}}<img src="{{.Icon}}" alt="">{{end}}<span>{{.Label}}</span></a></li>
{{end}}</ul>{{end}}
{{if .Other}}<a id="other" href="{{.Other}}">Use a different email address</a>{{end}}
</main>
</body>
</html>
`))

// renderSignIn answers with p. Its policy is the broker pages' (htmlHeaders) with img-src
// limited to the icons' origins and no <base>.
func renderSignIn(w http.ResponseWriter, p *signInPage) {
	htmlHeaders(w)
	csp := "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
	if len(p.imgOrigins) > 0 {
		csp += "; img-src " + strings.Join(p.imgOrigins, " ")
	}
	w.Header().Set("Content-Security-Policy", csp)
	w.WriteHeader(http.StatusOK)
	_ = signInTmpl.Execute(w, p)
}

// homeRealm decides the connection of a request naming none, for a client that may use
// every connection in enabled (two or more, in the client's order). It returns the connection
// a login_hint routes to, or the page to show; with neither, refusal says why no connection
// can be chosen.
func (s *Server) homeRealm(q url.Values, client *config.Client, enabled []*connection) (conn *connection, p *signInPage, refusal string) {
	var buttons []*connection
	byDomain := false
	for _, c := range enabled {
		if c.cfg.ButtonShown() {
			buttons = append(buttons, c)
		}
		byDomain = byDomain || len(c.cfg.Options.DomainAliases) > 0
	}
	if !byDomain {
		if len(buttons) == 0 {
			return nil, nil, "none of the connections enabled for this application is shown as a button (show_as_button) or has domain_aliases"
		}
		return nil, s.chooser(q, buttons, "Sign in to "+clientName(client)+" with:"), ""
	}
	hint := q.Get("login_hint")
	if hint == "" {
		return nil, s.identifierPage(q, client, buttons, "", ""), ""
	}
	domain := config.EmailDomain(hint)
	if domain == "" {
		return nil, s.identifierPage(q, client, buttons, hint, "Enter your email address, such as name@example.com."), ""
	}
	switch matches := claimants(enabled, domain); {
	case len(matches) == 1:
		return matches[0], nil, ""
	case len(matches) > 1: // stored through concurrent management writes; the user decides
		s.log.Warn("an email domain is a domain alias of several connections", "domain", domain, "client_id", client.ClientID)
		p := s.chooser(q, matches, "More than one sign-in is set up for "+domain+". Choose yours:")
		p.Other = s.authorizeURL(q, "", false)
		return nil, p, ""
	case len(buttons) == 0:
		return nil, s.identifierPage(q, client, buttons, hint, "No sign-in is set up for "+domain+". Check the address, or ask your administrator."), ""
	}
	p = s.chooser(q, buttons, "No single sign-on is set up for "+domain+". Choose how to sign in:")
	p.Other = s.authorizeURL(q, "", false)
	return nil, p, ""
}

// hintedConnection returns the name of the connection the request's login_hint routes to
// (its email domain an alias of exactly one of the connections client may use), or "".
func hintedConnection(snap *connSnapshot, client *config.Client, q url.Values) string {
	domain := config.EmailDomain(q.Get("login_hint"))
	if domain == "" {
		return ""
	}
	if c := claimants(snap.enabledConns(client), domain); len(c) == 1 {
		return c[0].cfg.Name
	}
	return ""
}

// detailHomeRealmDomain is the event detail naming the email domain that chose a login's
// connection (only the domain: the address is the user's).
const detailHomeRealmDomain = "home_realm_domain"

// claimants returns the connections of conns that list domain (lower case) in domain_aliases.
func claimants(conns []*connection, domain string) []*connection {
	var out []*connection
	for _, c := range conns {
		if c.cfg.HasDomainAlias(domain) {
			out = append(out, c)
		}
	}
	return out
}

// identifierPage asks for the email address; email and why refill it after a refusal.
func (s *Server) identifierPage(q url.Values, client *config.Client, buttons []*connection, email, why string) *signInPage {
	form := &identifierForm{Action: s.base + "/authorize", Email: email}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if k == "login_hint" || k == "connection" {
			continue
		}
		for _, v := range q[k] {
			form.Fields = append(form.Fields, pageField{Name: k, Value: v})
		}
	}
	p := s.chooser(q, buttons, "Sign in to "+clientName(client)+" with your email address.")
	p.Title, p.Error, p.Identifier = "Sign in", why, form
	return p
}

// chooser lists conns as buttons.
func (s *Server) chooser(q url.Values, conns []*connection, message string) *signInPage {
	p := &signInPage{Title: "Choose how to sign in", Message: message}
	for _, c := range conns {
		b := connButton{ID: "connection-" + c.cfg.Name, URL: s.authorizeURL(q, c.cfg.Name, true), Label: c.cfg.Name}
		if c.cfg.DisplayName != "" {
			b.Label = c.cfg.DisplayName
		}
		if origin := config.IconOrigin(c.cfg.Options.IconURL); origin != "" {
			b.Icon = c.cfg.Options.IconURL
			if !slices.Contains(p.imgOrigins, origin) {
				p.imgOrigins = append(p.imgOrigins, origin)
			}
		}
		p.Buttons = append(p.Buttons, b)
	}
	return p
}

// authorizeURL is the app's request again: with connection= set to name (when not ""), and
// without login_hint unless keepHint.
func (s *Server) authorizeURL(q url.Values, name string, keepHint bool) string {
	q2 := maps.Clone(q)
	delete(q2, "connection")
	if name != "" {
		q2.Set("connection", name)
	}
	if !keepHint {
		delete(q2, "login_hint")
	}
	return s.base + "/authorize?" + q2.Encode()
}

// domainAliasClash refuses a management write that would give cc a domain alias another
// stored connection has (config validate refuses the same within the YAML): an email domain
// must lead to one connection. Writes racing on two replicas can still both pass; homeRealm
// then shows the user the chooser of the connections that claim the domain.
func (s *Server) domainAliasClash(ctx context.Context, cc *config.Connection) *apiError {
	if len(cc.Options.DomainAliases) == 0 {
		return nil
	}
	snap, err := s.reg.current(ctx, true)
	if err != nil {
		return s.storeAPIError(err)
	}
	for j, a := range cc.Options.DomainAliases {
		for _, other := range snap.list {
			if other.cfg.Name != cc.Name && other.cfg.HasDomainAlias(strings.ToLower(a)) {
				return errBody(fmt.Sprintf("options.domain_aliases[%d]: %q is already a domain alias of connection %s: an email domain must lead to one connection", j, a, other.cfg.Name))
			}
		}
	}
	return nil
}
