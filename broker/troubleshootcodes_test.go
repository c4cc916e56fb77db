package broker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// writtenCodes reads the broker's own source (its non-test files) and returns the error
// codes of every oauthError (the token endpoint's answers) and every apiError or
// "errorCode" (the management API's and the console's refusals) it builds, so a code added
// anywhere is found without a second list. A code that is not a literal or a constant must
// be listed in dynamic, keyed by file and expression, with the codes it can hold.
func writtenCodes(t *testing.T, skipOAuth []string, dynamic map[string][]string) (oauth, api map[string]string) {
	t.Helper()
	imported := map[string]string{
		"upstream.CodeClientAuthUnsupported": upstream.CodeClientAuthUnsupported,
		"upstream.CodePARNotSupported":       upstream.CodePARNotSupported,
		"upstream.CodeDiscovery":             upstream.CodeDiscovery,
		"dpop.ErrCodeInvalidProof":           dpop.ErrCodeInvalidProof,
		"dpop.ErrCodeUseNonce":               dpop.ErrCodeUseNonce,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	parsed := map[string]*ast.File{}
	consts := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed[name] = f
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, spec := range g.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, v := range vs.Values {
						if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[vs.Names[i].Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
	}
	oauth, api = map[string]string{}, map[string]string{}
	for name, f := range parsed {
		src, _ := os.ReadFile(name)
		resolve := func(e ast.Expr, into map[string]string) {
			at := fset.Position(e.Pos()).String()
			switch v := e.(type) {
			case *ast.BasicLit:
				if s, err := strconv.Unquote(v.Value); err == nil && v.Kind == token.STRING {
					into[s] = at
					return
				}
			case *ast.Ident:
				if s, ok := consts[v.Name]; ok {
					into[s] = at
					return
				}
			case *ast.SelectorExpr:
				if x, ok := v.X.(*ast.Ident); ok {
					if s, ok := imported[x.Name+"."+v.Sel.Name]; ok {
						into[s] = at
						return
					}
				}
			}
			key := name + " " + string(src[fset.Position(e.Pos()).Offset:fset.Position(e.End()).Offset])
			codes, ok := dynamic[key]
			if !ok {
				t.Errorf("%s: an error code %q that is neither a literal nor a known constant: list the codes it can hold under %q", at, key, key)
			}
			for _, c := range codes {
				into[c] = at
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			typ, _ := cl.Type.(*ast.Ident)
			switch {
			case typ != nil && typ.Name == "oauthError" && !slices.Contains(skipOAuth, name):
				for _, el := range cl.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Code" {
						resolve(kv.Value, oauth)
					}
				}
			case typ != nil && typ.Name == "apiError" && len(cl.Elts) == 3:
				resolve(cl.Elts[1], api)
			default:
				for _, el := range cl.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.BasicLit); ok && k.Value == `"errorCode"` {
							resolve(kv.Value, api)
						}
					}
				}
			}
			return true
		})
	}
	return oauth, api
}

// Every error code the token and revocation endpoints answer (their feacft, fertft, ferrt and
// frrt events' details.error) and every errorCode of a management API or console refusal (fapi)
// has a troubleshooting entry, so the README's tables and the console's event view explain it.
// The codes are read from the broker's source.
func TestEveryTokenEndpointAndManagementCodeHasATroubleshootingEntry(t *testing.T) {
	// Files whose OAuth errors are no token-endpoint answers: /authorize and the callback
	// (failed logins, TestEveryFailedLoginCodeHasATroubleshootingEntry), /userinfo (no
	// event of a token topic), the upstream's logout (flo).
	skip := []string{"authorize.go", "userinfo.go", "userinfolimit.go", "upstreamlogout.go"}
	dynamic := map[string][]string{
		"dpopserver.go code":            {dpop.ErrCodeInvalidProof, dpop.ErrCodeUseNonce},
		"mgmt_connections.go ce.Code()": {discovery.CodeDPoPNotSupported, discovery.CodeDPoPAlgMismatch},
		"mgmt_connections.go code":      {"invalid_body", "token_vault_conflict"},
		"mgmt.go e.code":                nil, // the apiError's own code, found where it is built
	}
	oauth, api := writtenCodes(t, skip, dynamic)
	if len(oauth) < 10 || len(api) < 20 {
		t.Fatalf("found %d token-endpoint and %d management codes in the source: the scan misses them", len(oauth), len(api))
	}
	for code, at := range oauth {
		if code == dpop.ErrCodeUseNonce {
			continue // a dpop_nonce_challenge event, a protocol step (noncechallenge.go)
		}
		ev := &logs.Event{Type: logs.TypeFailedExchange, Details: map[string]any{"error": code}}
		if _, _, exact, _ := logs.TroubleshootingFor(ev); !exact {
			t.Errorf("token endpoint error %q (%s) has no troubleshooting entry in logs/troubleshoot.go", code, at)
		}
	}
	for code, at := range api {
		ev := &logs.Event{Type: logs.TypeFailedAPI, Details: map[string]any{"error": map[string]any{"errorCode": code}}}
		if _, _, exact, _ := logs.TroubleshootingFor(ev); !exact {
			t.Errorf("management errorCode %q (%s) has no troubleshooting entry in logs/troubleshoot.go", code, at)
		}
	}
}
