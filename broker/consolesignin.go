package broker

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
)

// A console sign-in through the broker in flight (state, PKCE verifier, nonce, expiry) is kept
// in the browser, not in the store: the sign-in cookie holds it sealed, a compact JWE (alg dir,
// enc A256GCM: authenticated encryption, so it can be neither read nor forged nor altered),
// like the opaque access tokens (opaque.go) but under a key of its own derived from the
// signing key (consoleLoginInfo), so every replica opens every replica's cookie and neither
// kind of value opens as the other. Starting a sign-in thus stores nothing and holds nothing:
// however many are started, from however many addresses, nothing fills up and a real
// administrator's sign-in goes through. The callback clears the cookie (single use in that
// browser); the code it redeems is single use at the token endpoint, and the state, nonce and
// verifier tie it to the sign-in the cookie started. A signing key whose private part cannot
// be exported (an external signer) gets a random key per process: a sign-in must then return
// to the replica that started it.

// consoleLoginInfo separates the sign-in cookie's key from every other use of the signing key.
const consoleLoginInfo = "dpop-broker console sign-in state A256GCM v1"

// consoleLoginMax bounds the sign-in cookie's value read back (a sealed state is ~350 bytes).
const consoleLoginMax = 1024

// consoleSealer seals and opens the states of console sign-ins in flight.
type consoleSealer struct {
	key []byte
	enc jose.Encrypter
}

// newConsoleSealer derives the sign-in cookie's key from the signing key of k.
func newConsoleSealer(k *config.KeyRing) (*consoleSealer, error) {
	key, err := opaqueKey(k.Signing, consoleLoginInfo)
	if err != nil {
		return nil, err
	}
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key) // crypto/rand.Read never fails
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key}, nil)
	if err != nil {
		return nil, fmt.Errorf("console sign-in encrypter: %w", err)
	}
	return &consoleSealer{key: key, enc: enc}, nil
}

// seal returns st as the sign-in cookie's value.
func (c *consoleSealer) seal(st *consoleLoginState) (string, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("marshal console sign-in: %w", err)
	}
	obj, err := c.enc.Encrypt(payload)
	if err != nil {
		return "", fmt.Errorf("seal console sign-in: %w", err)
	}
	return obj.CompactSerialize()
}

// errConsoleLogin is open's one answer for a value that is not a sign-in this broker sealed
// (other key, other algorithms, tampered, undecodable, incomplete).
var errConsoleLogin = errors.New("not a console sign-in this broker started")

// open returns the state sealed in raw, checking that it is complete and live at nowUnix.
func (c *consoleSealer) open(raw string, nowUnix int64) (*consoleLoginState, error) {
	obj, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, errConsoleLogin
	}
	payload, err := obj.Decrypt(c.key)
	if err != nil {
		return nil, errConsoleLogin
	}
	var st consoleLoginState
	if json.Unmarshal(payload, &st) != nil || st.State == "" || st.Verifier == "" || st.Nonce == "" {
		return nil, errConsoleLogin
	}
	if nowUnix >= st.Expires {
		return nil, errors.New("the sign-in expired")
	}
	return &st, nil
}
