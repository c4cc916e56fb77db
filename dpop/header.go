package dpop

import (
	"crypto"
	"strings"
	"sync"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

// proofHeaderInfo is what a valid protected header yields: the alg, the public key that fits
// it and its RFC 7638 thumbprint.
type proofHeaderInfo struct {
	alg  string
	spec algSpec
	key  any
	jkt  string
}

// headerCache remembers parsed headers that passed RFC 9449 §4.3 steps 2, 4, 5 and 7, keyed
// by their exact base64url text. A client signs every proof with one key, so its header text
// repeats and the JSON, JWK and thumbprint work is done once. The result is a pure function of
// the key text, so the cache is shared by all Verifiers; allow-list checks stay per Verifier.
type headerCache struct {
	mu  sync.RWMutex
	m   map[string]*proofHeaderInfo
	max int
}

const (
	headerCacheEntries = 4096
	headerCacheMaxLen  = 2048 // longer headers are parsed every time
)

var proofHeaders = &headerCache{m: make(map[string]*proofHeaderInfo), max: headerCacheEntries}

// lookup returns the parsed header for hdrB64, parsing and caching it on a miss.
func (c *headerCache) lookup(hdrB64 string) (*proofHeaderInfo, *ProofError) {
	c.mu.RLock()
	h, ok := c.m[hdrB64]
	c.mu.RUnlock()
	if ok {
		return h, nil
	}
	h, err := parseHeader(hdrB64)
	if err != nil {
		return nil, err
	}
	if len(hdrB64) <= headerCacheMaxLen {
		c.mu.Lock()
		if len(c.m) >= c.max {
			for k := range c.m { // evict one arbitrary entry
				delete(c.m, k)
				break
			}
		}
		c.m[strings.Clone(hdrB64)] = h
		c.mu.Unlock()
	}
	return h, nil
}

// parseHeader runs the header checks of RFC 9449 §4.3: step 2 (JSON, no crit), 4 (typ), 5
// (known asymmetric alg) and 7 (public jwk fitting alg), and computes the key's RFC 7638
// thumbprint.
func parseHeader(hdrB64 string) (*proofHeaderInfo, *ProofError) {
	hdrJSON, err := b64.Strict().DecodeString(hdrB64)
	if err != nil {
		return nil, invalid(checkWellFormed, "DPoP proof header is not base64url")
	}
	var hdr rawHeader
	if err := josejson.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, invalid(checkWellFormed, "DPoP proof header is not a JSON object")
	}
	if hdr.Crit != nil {
		return nil, invalid(checkWellFormed, "DPoP proof header must not carry crit")
	}
	if hdr.Typ != "dpop+jwt" {
		return nil, invalid(checkTyp, `typ must be "dpop+jwt"`)
	}
	spec, known := algSpecs[hdr.Alg]
	if !known {
		return nil, invalid(checkAlg, "alg not allowed")
	}
	if len(hdr.JWK) == 0 || string(hdr.JWK) == "null" {
		return nil, invalid(checkPublicJWK, "jwk missing from the header")
	}
	var priv jwkPrivate
	if err := josejson.Unmarshal(hdr.JWK, &priv); err != nil {
		return nil, invalid(checkPublicJWK, "jwk is not a JSON object")
	}
	if priv.any() {
		return nil, invalid(checkPublicJWK, "jwk contains private key members")
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(hdr.JWK); err != nil {
		return nil, invalid(checkPublicJWK, "jwk is not a valid public key")
	}
	if err := keyFits(jwk.Key, spec); err != nil {
		return nil, invalid(checkPublicJWK, err.Error())
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalid(checkPublicJWK, "jwk has no thumbprint")
	}
	return &proofHeaderInfo{alg: hdr.Alg, spec: spec, key: jwk.Key, jkt: b64.EncodeToString(tp)}, nil
}
