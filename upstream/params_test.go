package upstream

import (
	"context"
	"net/url"
	"strings"
	"testing"
)

func TestBeginSendsUpstreamParamsValuesAndAliases(t *testing.T) {
	f := newFakeIdP(t, nil)
	c := newConn(t, f, func(cfg *Config) {
		cfg.UpstreamParams = map[string]string{"acr_values": "urn:okta:loa:2fa:any", "prompt": "consent"}
		cfg.UpstreamAliases = map[string]string{"login_hint": "login_hint", "domain_hint": "ui_locales"}
	}, nil)
	tests := []struct {
		name    string
		options []BeginOption
		want    map[string]string // "" = absent
	}{
		{name: "aliases take the app's values", options: []BeginOption{WithAppParams(map[string]string{"login_hint": "bob@example.com", "ui_locales": "de"})},
			want: map[string]string{"acr_values": "urn:okta:loa:2fa:any", "prompt": "consent", "login_hint": "bob@example.com", "domain_hint": "de"}},
		{name: "an alias whose app parameter is absent is not sent", options: nil,
			want: map[string]string{"acr_values": "urn:okta:loa:2fa:any", "login_hint": "", "domain_hint": ""}},
		{name: "the app's prompt=login wins over a configured prompt", options: []BeginOption{WithPromptLogin()},
			want: map[string]string{"prompt": "login"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := c.Begin(context.Background(), redirectURI, tt.options...)
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			u, err := url.Parse(st.AuthURL)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			for k, v := range tt.want {
				if got := q.Get(k); got != v || len(q[k]) > 1 {
					t.Errorf("%s = %q (%d values), want %q", k, got, len(q[k]), v)
				}
			}
			if q.Get("state") != st.State || q.Get("nonce") != st.Nonce || q.Get("redirect_uri") != redirectURI {
				t.Errorf("the flow's own parameters changed: %s", st.AuthURL)
			}
		})
	}
}

func TestUpstreamParamsOutsideTheSafeListAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		params  map[string]string
		aliases map[string]string
		wantErr string
	}{
		{name: "redirect_uri", params: map[string]string{"redirect_uri": "https://evil.example/cb"}, wantErr: "upstream_params.redirect_uri: is set by the broker"},
		{name: "code_challenge", params: map[string]string{"code_challenge": "x"}, wantErr: "upstream_params.code_challenge: is set by the broker"},
		{name: "client_id as alias target", aliases: map[string]string{"client_id": "login_hint"}, wantErr: "upstream_params.client_id: is set by the broker"},
		{name: "unknown parameter", params: map[string]string{"blog": "x"}, wantErr: "upstream_params.blog: is not a parameter the broker sends upstream"},
		{name: "alias of a parameter the broker keeps", aliases: map[string]string{"login_hint": "state"}, wantErr: `alias "state" is not an authorization parameter the broker passes on`},
		{name: "value and alias together", params: map[string]string{"login_hint": "a"}, aliases: map[string]string{"login_hint": "login_hint"}, wantErr: "set value or alias, not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Issuer: "https://idp.example", ClientID: "c", UpstreamParams: tt.params, UpstreamAliases: tt.aliases}, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
