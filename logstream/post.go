package logstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// responseDrain is how much of an answer is read (so the connection can be reused) before
// it is closed.
const responseDrain = 4 << 10

// Request headers (the package doc describes them).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// statusError is an answer other than 2xx.
type statusError struct{ code int }

func (e *statusError) Error() string {
	return fmt.Sprintf("the endpoint answered %d %s", e.code, http.StatusText(e.code))
}

// Sign returns the webhook-signature value of a request with id, timestamp and body under
// key: "v1," and the standard base64 of HMAC-SHA256(key, id "." timestamp "." body).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// post sends batch once, within the stream's Timeout: nil on a 2xx answer.
func (sd *sender) post(ctx context.Context, batch []logs.Event) error {
	body, err := json.Marshal(batch)
	if err != nil {
		return fmt.Errorf("logstream: encode batch: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, sd.st.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sd.st.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("logstream: the url cannot be requested")
	}
	id, ts := batch[len(batch)-1].LogID, time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dpop-broker-logstream")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	if len(sd.st.HMACKey) > 0 {
		req.Header.Set(HeaderSignature, Sign(sd.st.HMACKey, id, ts, body))
	}
	if sd.st.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+sd.st.BearerToken)
	}
	resp, err := sd.st.HTTP.Do(req)
	if err != nil {
		return transportError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, responseDrain))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{code: resp.StatusCode}
	}
	return nil
}

// transportError is err without the URL that *url.Error repeats (a query may carry a key).
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("logstream: no answer within the timeout: %w", ue.Err)
		}
		return fmt.Errorf("logstream: %w", ue.Err)
	}
	return err
}
