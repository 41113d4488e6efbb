package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// completionBody is a small non-streaming chat completion for model.
func completionBody(model string, maxTokens int) []byte {
	return fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":"Hello"}],"max_tokens":%d}`, model, maxTokens)
}

// target is where completions go: through thaw (with a token) or straight
// to an instance.
type target struct {
	url    string
	auth   bool
	client *http.Client
}

// keepAliveClient reuses up to conns connections per host.
func keepAliveClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
		IdleConnTimeout: time.Minute,
	}}
}

// outcome is one request's result.
type outcome struct {
	status    int           // 0: transport error
	err       error         // transport or read error
	firstByte time.Time     // when the first response byte arrived
	done      time.Time     // when the body was read
	latency   time.Duration // from send to body read
	header    http.Header
}

// send posts body to t and reads the whole answer.
func (t target) send(ctx context.Context, body []byte) outcome {
	var o outcome
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if t.auth {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() { o.firstByte = time.Now() },
	}))
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		o.err = err
		o.done = time.Now()
		return o
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	o.done = time.Now()
	o.latency = o.done.Sub(start)
	o.status, o.err, o.header = resp.StatusCode, err, resp.Header
	return o
}

// closedLoop sends n requests from conc workers, each sending its next
// request when the previous answer is read. It returns the latency of each
// successful request, the wall time, and the number of failures (transport
// errors or non-200 answers) with the first one.
func closedLoop(ctx context.Context, t target, body []byte, n, conc int) (lat []time.Duration, wall time.Duration, failed int, firstErr error) {
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	lat = make([]time.Duration, 0, n)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				o := t.send(ctx, body)
				mu.Lock()
				switch {
				case o.err != nil || o.status != http.StatusOK:
					failed++
					if firstErr == nil {
						firstErr = fmt.Errorf("status %d: %v", o.status, o.err)
					}
				default:
					lat = append(lat, o.latency)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), failed, firstErr
}
