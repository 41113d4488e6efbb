package test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
)

// TestH2C checks that thaw answers cleartext HTTP/2 (what an edge proxy uses
// to multiplex held requests over few connections), including requests held
// through a cold start.
func TestH2C(t *testing.T) {
	p := startThaw(t, thawOpts{})
	name := uniqueName("h2c")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr}
	body, _ := json.Marshal(map[string]any{
		"model": "dev/" + name, "max_tokens": 2,
		"messages": []map[string]string{{"role": "user", "content": "hi"}},
	})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, p.Base+"/v1/openai/chat/completions", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+devToken)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
				errs <- resp.Proto + " " + resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("h2c request: %s", e)
	}
}
