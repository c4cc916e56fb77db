package interop

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The identity SaaS's Node management SDK (`auth0` 7.1.0, pinned in package-lock.json) drives
// the broker's management API: mgmt-sdk.mjs goes through every endpoint the SDK offers for
// connections, clients and logs that the broker serves (list with its Page iterators, get,
// create, update as GET → modify → PATCH, delete, the enabled clients, a client's secret
// rotation, logs with `search`, fields) and through the SDK's error classes. The Go side then logs in through the other replica
// with the round-tripped connection.

// sdkBudget bounds one run of mgmt-sdk.mjs (about forty management calls).
const sdkBudget = 5 * time.Minute

// sdkReport is what mgmt-sdk.mjs prints.
type sdkReport struct {
	Steps []struct {
		Name   string          `json:"name"`
		OK     bool            `json:"ok"`
		Detail json.RawMessage `json:"detail"`
	} `json:"steps"`
	Calls []struct {
		Method   string   `json:"method"`
		Path     string   `json:"path"`
		Query    string   `json:"query"`
		BodyKeys []string `json:"body_keys"`
	} `json:"calls"`
	Failures []string `json:"failures"`
}

// runMgmtSDK runs mgmt-sdk.mjs against brokerURL and returns its report.
func (w *mgmtWorld) runMgmtSDK(t *testing.T, brokerURL string) sdkReport {
	t.Helper()
	cmd := exec.Command("node", "mgmt-sdk.mjs", "--base", brokerURL, "--connection", mgmtConnName,
		"--client", mgmtClientID, "--issuer", w.dpopURL)
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(), "MGMT_TOKEN="+w.token, "UPSTREAM_SECRET="+w.upstreamSecret)
	p := start(t, "mgmt-sdk.mjs", cmd, nil)
	select {
	case <-p.exited:
	case <-time.After(sdkBudget):
		t.Fatalf("mgmt-sdk.mjs still running after %v\n%s", sdkBudget, p.out)
	}
	if p.err != nil {
		t.Fatalf("mgmt-sdk.mjs failed: %v\n%s", p.err, p.out)
	}
	w.noSecrets(t, "mgmt-sdk.mjs output", []byte(p.out.String()))
	for _, l := range p.out.Lines() {
		var rep sdkReport
		if strings.HasPrefix(l, `{"steps":`) && json.Unmarshal([]byte(l), &rep) == nil {
			return rep
		}
	}
	t.Fatalf("mgmt-sdk.mjs printed no report\n%s", p.out)
	return sdkReport{}
}

func TestManagementSDKDrivesConnectionsClientsAndLogs(t *testing.T) {
	t.Parallel()
	w := setupMgmt(t)

	// A login through B before the SDK runs: the `search` steps look for its s event.
	wantType(t, w.loginVia(t, w.b), "s")

	rep := w.runMgmtSDK(t, w.a.URL)
	for _, s := range rep.Steps {
		t.Logf("SDK step ok=%v %s %s", s.OK, s.Name, s.Detail)
	}
	for _, f := range rep.Failures {
		t.Errorf("SDK: %s", f)
	}
	if len(rep.Steps) < 20 {
		t.Errorf("the SDK script ran %d steps, want 20", len(rep.Steps))
	}
	// The SDK sent its own parameter names: search on logs, include_totals and take on the
	// connection list (the broker knows them all: no call was refused for its query except
	// the one the script made up).
	var sawSearch bool
	for _, c := range rep.Calls {
		if c.Path == "/api/v2/logs" && strings.Contains(c.Query, "search=") {
			sawSearch = true
		}
	}
	if !sawSearch {
		t.Errorf("the SDK never sent search= on /api/v2/logs: %+v", rep.Calls)
	}

	t.Run("B serves the SDK's changes and logs in with the round-tripped connection", func(t *testing.T) {
		status, raw := w.mgmtAPI(t, w.b.URL, http.MethodGet, "/api/v2/connections?name="+mgmtConnName+"&fields=id,display_name,realms,is_domain_connection,metadata", nil)
		var list []struct {
			ID                 string            `json:"id"`
			DisplayName        string            `json:"display_name"`
			Realms             []string          `json:"realms"`
			IsDomainConnection bool              `json:"is_domain_connection"`
			Metadata           map[string]string `json:"metadata"`
		}
		if status != http.StatusOK || json.Unmarshal(raw, &list) != nil || len(list) != 1 {
			t.Fatalf("GET connections on B: %d %s", status, raw)
		}
		c := list[0]
		if c.DisplayName != "Corp (SDK)" || !c.IsDomainConnection || !slices.Equal(c.Realms, []string{mgmtConnName, "corp.example"}) ||
			c.Metadata["owner"] != "sdk" || c.Metadata["ticket"] != "IAM-7" {
			t.Errorf("connection on B after the SDK's PATCH: %s", raw)
		}
		ev := w.loginVia(t, w.b)
		wantType(t, ev, "s")
		if got := ev.Raw["connection_id"]; got != c.ID {
			t.Errorf("login event connection_id %v, want %s", got, c.ID)
		}
		if st := getStats(t, w.dpopURL); st.TokenRequests != 2 {
			t.Errorf("upstream saw %d token requests, want 2 (the stored client_secret authenticated both)", st.TokenRequests)
		}
		status, raw = w.mgmtAPI(t, w.b.URL, http.MethodGet, "/api/v2/connections?fields=name", nil)
		if status != http.StatusOK || strings.Contains(string(raw), "sdk-created") {
			t.Errorf("GET connections on B after the SDK's delete: %d %s", status, raw)
		}
		status, raw = w.mgmtAPI(t, w.b.URL, http.MethodGet, "/api/v2/clients?fields=client_id,name", nil)
		if status != http.StatusOK || !strings.Contains(string(raw), mgmtClientID) || strings.Contains(string(raw), "SDK app") {
			t.Errorf("GET clients on B after the SDK's delete: %d %s, want %s and not the SDK's app", status, raw, mgmtClientID)
		}
	})
}
