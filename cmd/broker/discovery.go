package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// cmdDiscoveryCheck prints what an upstream supports and whether it can do the DPoP alg:
// exit 0 when it can, 1 with dpop_not_supported / dpop_alg_mismatch, 3 when discovery fails
// (discovery_failed: unreachable within --timeout, refused by the address policy, or an
// unusable document).
func cmdDiscoveryCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("discovery check", stderr)
	alg := fs.String("alg", "ES256", "DPoP algorithm the connection would use: ES256, Ed25519, RS256 or PS256")
	discoveryURL := fs.String("discovery-url", "", "discovery document URL (default ISSUER/.well-known/openid-configuration)")
	timeout := fs.Duration("timeout", 15*time.Second, "bound on the whole check (exit 3 when it passes)")
	var allowed []string
	fs.Func("allow-network", "CIDR or address the check may connect to although it is internal (loopback, private, …), as upstream_allowed_networks; repeatable", func(v string) error {
		allowed = append(allowed, v)
		return nil
	})
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(fs, err, stdout)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "broker discovery check: --timeout must be a positive duration such as 10s\n")
		return exitUsage
	}
	if len(pos) != 1 {
		return usageMistake(stderr, findCommand("discovery check"))
	}
	switch *alg {
	case "ES256", "Ed25519", "RS256", "PS256":
	default:
		fmt.Fprintf(stderr, "broker discovery check: --alg %q is not supported (use ES256, Ed25519, RS256 or PS256)\n", *alg)
		return exitUsage
	}
	// The broker's own upstream client: the same address policy (with the networks given),
	// no redirects, no proxy; the failure is shown in full, the operator is not an attacker.
	hc, err := broker.UpstreamHTTPClient(*timeout, allowed)
	if err != nil {
		fmt.Fprintf(stderr, "broker discovery check: --allow-network: %v\n", err)
		return exitUsage
	}
	r := checkUpstreamDPoP(ctx, hc, *timeout, pos[0], *discoveryURL, *alg)
	if r.doc == nil {
		fmt.Fprintf(stderr, "%s: %v\n", upstream.CodeDiscovery, r.err)
		var refused *broker.AddressRefusedError
		if errors.As(r.err, &refused) {
			fmt.Fprintln(stderr, "(an upstream on an internal address is checked with --allow-network CIDR, as upstream_allowed_networks allows it to serve)")
		}
		return r.code
	}
	doc := r.doc
	list := func(v []string) string {
		if v == nil {
			return "(absent)"
		}
		return "[" + strings.Join(v, ", ") + "]"
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(stdout, "issuer: %s\n", doc.Issuer)
	fmt.Fprintf(stdout, "authorization_endpoint: %s\n", doc.AuthorizationEndpoint)
	fmt.Fprintf(stdout, "token_endpoint: %s\n", doc.TokenEndpoint)
	fmt.Fprintf(stdout, "userinfo_endpoint: %s\n", doc.UserinfoEndpoint)
	fmt.Fprintf(stdout, "jwks_uri: %s\n", doc.JWKSURI)
	fmt.Fprintf(stdout, "dpop_signing_alg_values_supported: %s\n", list(doc.DPoPSigningAlgValuesSupported))
	fmt.Fprintf(stdout, "code_challenge_methods_supported: %s (PKCE S256: %s)\n", list(doc.CodeChallengeMethodsSupported), yes(doc.SupportsS256()))
	fmt.Fprintf(stdout, "token_endpoint_auth_methods_supported: %s (without token_endpoint_auth_method the broker uses %s)\n", list(doc.TokenEndpointAuthMethodsSupported), doc.AuthStyle())
	fmt.Fprintf(stdout, "token_endpoint_auth_signing_alg_values_supported: %s\n", list(doc.TokenEndpointAuthSigningAlgValuesSupported))
	fmt.Fprintf(stdout, "pushed_authorization_request_endpoint: %s (require_pushed_authorization_requests: %t)\n", doc.PushedAuthorizationRequestEndpoint, doc.RequirePushedAuthorizationRequests)
	fmt.Fprintf(stdout, "id_token_signing_alg_values_supported: %s\n", list(doc.IDTokenSigningAlgValuesSupported))
	fmt.Fprintf(stdout, "authorization_response_iss_parameter_supported: %t\n", doc.AuthorizationResponseIssParameterSupported)
	if r.code != exitOK {
		fmt.Fprintf(stdout, "%s: %v\n", capabilityCode(r.err), r.err)
		return r.code
	}
	fmt.Fprintf(stdout, "DPoP %s: OK (proofs labelled %s)\n", *alg, r.wire)
	return exitOK
}
