package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request body under
// the webhook's shared secret. A receiver recomputes it over the raw body and compares
// in constant time (hmac.Equal) before trusting anything in the body.
const SignatureHeader = "X-Pgtripwire-Signature"

// DeliveryHeader identifies a transition across retries ("fingerprint/state/unix-nanos"):
// delivery is at-least-once, so a receiver that must act once deduplicates on it.
const DeliveryHeader = "X-Pgtripwire-Delivery"

// Sign returns the SignatureHeader value for body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether signature is body's SignatureHeader value under secret.
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// webhook is the Sink that POSTs each transition's alert line (the JSON of the alert
// log) to a URL, signed.
type webhook struct {
	cfg    WebhookConfig
	client *http.Client
}

func newWebhook(cfg WebhookConfig) *webhook {
	return &webhook{cfg: cfg, client: httpClient(cfg.Timeout, cfg.TLS)}
}

// Name implements Sink.
func (w *webhook) Name() string { return "webhook:" + w.cfg.Name }

// Send implements Sink.
func (w *webhook) Send(ctx context.Context, t Transition) error {
	body, err := json.Marshal(t.Alert)
	if err != nil {
		return fmt.Errorf("encode alert: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("build request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(w.cfg.Secret, body))
	req.Header.Set(DeliveryHeader, fmt.Sprintf("%s/%s/%d", t.Alert.Fingerprint, t.Alert.State, t.Alert.Time.UnixNano()))
	return do(w.client, req)
}
