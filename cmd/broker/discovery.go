package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/discovery"
)

// cmdDiscoveryCheck prints what an upstream supports and whether it can do the DPoP alg:
// exit 0 when it can, 1 with dpop_not_supported / dpop_alg_mismatch, 2 when discovery fails.
func cmdDiscoveryCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("discovery check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	alg := fs.String("alg", "ES256", "DPoP algorithm the connection would use: ES256, Ed25519, RS256 or PS256")
	discoveryURL := fs.String("discovery-url", "", "discovery document URL (default ISSUER/.well-known/openid-configuration)")
	var allowed []string
	fs.Func("allow-network", "CIDR or address the check may connect to although it is internal (loopback, private, …), as upstream_allowed_networks; repeatable", func(v string) error {
		allowed = append(allowed, v)
		return nil
	})
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: broker discovery check ISSUER [--alg ES256] [--discovery-url URL] [--allow-network CIDR]...")
		return 2
	}
	switch *alg {
	case "ES256", "Ed25519", "RS256", "PS256":
	default:
		fmt.Fprintf(stderr, "broker discovery check: --alg %q is not supported (use ES256, Ed25519, RS256 or PS256)\n", *alg)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// The broker's own upstream client: the same address policy (with the networks given),
	// no redirects, no proxy; the failure is shown in full, the operator is not an attacker.
	hc, err := broker.UpstreamHTTPClient(10*time.Second, allowed)
	if err != nil {
		fmt.Fprintf(stderr, "broker discovery check: --allow-network: %v\n", err)
		return 2
	}
	dc := &discovery.Client{HTTP: hc}
	doc, err := dc.Get(ctx, pos[0], *discoveryURL)
	if err != nil {
		fmt.Fprintf(stderr, "discovery_failed: %v\n", err)
		var refused *broker.AddressRefusedError
		if errors.As(err, &refused) {
			fmt.Fprintln(stderr, "(an upstream on an internal address is checked with --allow-network CIDR, as upstream_allowed_networks allows it to serve)")
		}
		return 2
	}
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
	wire, err := doc.CheckDPoP(*alg)
	if err != nil {
		var ce *discovery.CapabilityError
		if errors.As(err, &ce) {
			fmt.Fprintf(stdout, "%s: %v\n", ce.Code(), ce)
			return 1
		}
		fmt.Fprintf(stdout, "dpop check failed: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "DPoP %s: OK (proofs labelled %s)\n", *alg, wire)
	return 0
}
