package main

import (
	"crypto"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/dpop"
)

// cmdKeysGenerate prints a new PKCS#8 PEM private key to stdout and its public JWK
// thumbprint to stderr.
func cmdKeysGenerate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keys generate", stderr)
	alg := fs.String("alg", "ES256", "key algorithm: ES256, Ed25519, RS256 or PS256")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker keys generate: unexpected argument %q\n", fs.Arg(0))
		return usageMistake(stderr, findCommand("keys generate"))
	}
	switch *alg {
	case "ES256", "Ed25519", "EdDSA", "RS256", "PS256":
	default:
		fmt.Fprintf(stderr, "broker keys generate: --alg %q is not supported (use ES256, Ed25519, RS256 or PS256)\n", *alg)
		return 2
	}
	key, err := dpop.GenerateKey(*alg)
	if err != nil {
		fmt.Fprintf(stderr, "broker keys generate: %v\n", err)
		return 1
	}
	pem, err := dpop.MarshalPrivateKeyPEM(key)
	if err != nil {
		fmt.Fprintf(stderr, "broker keys generate: %v\n", err)
		return 1
	}
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		fmt.Fprintf(stderr, "broker keys generate: thumbprint: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(pem)
	fmt.Fprintf(stderr, "alg: %s\nthumbprint: %s\n", *alg, base64.RawURLEncoding.EncodeToString(tp))
	return 0
}
