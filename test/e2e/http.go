package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// Response is what a client saw of one HTTP exchange: the answer read in
// full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Send sends method url over c (http.DefaultClient when nil) and reads the
// answer in full. body is sent as JSON (no body and no Content-Type when
// nil), token as a bearer token (none when ""), and header holds extra
// name, value pairs.
func Send(ctx context.Context, c *http.Client, method, url, token string, body []byte, header ...string) (Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	return ReadAll(c.Do(req))
}

// SendT is Send for a test, failing t when no answer came.
func SendT(t testing.TB, c *http.Client, method, url, token string, body []byte, header ...string) Response {
	t.Helper()
	r, err := Send(t.Context(), c, method, url, token, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// ReadAll is what a user sees of the answer of an http.Client's Do: resp
// read in full and closed, or err.
func ReadAll(resp *http.Response, err error) (Response, error) {
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("read body: %w", err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
