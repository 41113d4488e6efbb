package spend

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// SignatureHeader carries a webhook body's HMAC-SHA256 under the user's
// webhook secret: "sha256=<hex>" (GitHub's scheme, so existing verifiers
// work).
const SignatureHeader = "X-Thaw-Signature"

// Sign is the SignatureHeader value for body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Webhooks posts events to the URL a user set, signed with their secret.
type Webhooks struct {
	Client *http.Client
	// Attempts per event; the wait doubles from one second. Default 5.
	Attempts int
	Logger   *slog.Logger
}

// Post sends e to url in the background, retrying on failure; it returns at
// once.
func (w *Webhooks) Post(ctx context.Context, url, secret string, e Event) {
	if url == "" {
		return
	}
	body, err := json.Marshal(e)
	if err != nil {
		return
	}
	go w.send(context.WithoutCancel(ctx), url, secret, e.Type, body)
}

func (w *Webhooks) send(ctx context.Context, url, secret, typ string, body []byte) {
	client, attempts, log := w.Client, w.Attempts, w.Logger
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if attempts <= 0 {
		attempts = 5
	}
	if log == nil {
		log = slog.Default()
	}
	wait := time.Second
	for i := 1; ; i++ {
		err := w.once(ctx, client, url, secret, typ, body)
		if err == nil {
			return
		}
		if i == attempts {
			log.Warn("webhook not delivered", "url", url, "attempts", i, "err", err)
			return
		}
		time.Sleep(wait)
		wait *= 2
	}
}

func (w *Webhooks) once(ctx context.Context, client *http.Client, url, secret, typ string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Thaw-Event", typ)
	if secret != "" {
		req.Header.Set(SignatureHeader, Sign(secret, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
