package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// obj is a decoded JSON object.
type obj = map[string]any

// reply is one whole HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body as a JSON object, failing t when it is not one.
func (r reply) json(t *testing.T) obj {
	t.Helper()
	var o obj
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("body is not a JSON object (%v): %s", err, r.body)
	}
	return o
}

// send sends method path with body (JSON, or nothing when "") and reads
// the whole answer, within 60 seconds.
func send(t *testing.T, srv server, method, path, body string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r, err := e2e.Send(ctx, nil, method, srv.base+path, "", b)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return reply{status: r.Status, header: r.Header, body: r.Body}
}

// post sends a JSON request built from fields, with "model" set to the
// served model unless fields has one.
func post(t *testing.T, srv server, path string, fields obj) reply {
	t.Helper()
	if _, ok := fields["model"]; !ok {
		fields["model"] = srv.model
	}
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, srv, http.MethodPost, path, string(b))
}

// postOK is post that fails t unless the answer is 200 with a JSON object.
func postOK(t *testing.T, srv server, path string, fields obj) obj {
	t.Helper()
	r := post(t, srv, path, fields)
	if r.status != http.StatusOK {
		t.Fatalf("POST %s: status %d, want 200: %s", path, r.status, r.body)
	}
	return r.json(t)
}

// events reads a server-sent event stream as sent: the data of each event,
// failing t when a line is neither "data: ..." nor the blank line that
// ends an event.
func events(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	blank := true // the previous line ended an event
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if blank {
				t.Errorf("stream has an empty event")
			}
			blank = true
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || !blank {
			t.Fatalf("stream line %q is not the one data line of an event:\n%s", line, body)
		}
		out = append(out, data)
		blank = false
	}
	if !blank {
		t.Errorf("stream does not end with a blank line")
	}
	return out
}

// chunks returns a stream's events before the final [DONE] as objects,
// failing t unless [DONE] is there, last, and once.
func chunks(t *testing.T, r reply) []obj {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	evs := events(t, r.body)
	if len(evs) == 0 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("stream does not end with data: [DONE]:\n%s", r.body)
	}
	evs = evs[:len(evs)-1]
	if slices.Contains(evs, "[DONE]") {
		t.Errorf("[DONE] sent more than once:\n%s", r.body)
	}
	out := make([]obj, len(evs))
	for i, e := range evs {
		if err := json.Unmarshal([]byte(e), &out[i]); err != nil {
			t.Fatalf("event %d is not a JSON object (%v): %s", i, err, e)
		}
	}
	return out
}

// keys returns o's keys, sorted.
func keys(o any) []string {
	m, _ := o.(obj)
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// field is o[k] as a T, failing t when it is not one; want names T in the
// failure ("a number").
func field[T any](t *testing.T, o obj, k, want string) T {
	t.Helper()
	v, ok := o[k].(T)
	if !ok {
		t.Fatalf("%s = %#v, want %s (in %v)", k, o[k], want, o)
	}
	return v
}

// num is o[k] as a number, failing t when it is not one.
func num(t *testing.T, o obj, k string) float64 {
	t.Helper()
	return field[float64](t, o, k, "a number")
}

// sub is o[k] as an object, failing t when it is not one.
func sub(t *testing.T, o obj, k string) obj {
	t.Helper()
	return field[obj](t, o, k, "an object")
}

// list is o[k] as an array of objects, failing t when it is not one.
func list(t *testing.T, o obj, k string) []obj {
	t.Helper()
	arr := field[[]any](t, o, k, "an array")
	var ok bool
	out := make([]obj, len(arr))
	for i, v := range arr {
		if out[i], ok = v.(obj); !ok {
			t.Fatalf("%s[%d] = %#v, want an object", k, i, v)
		}
	}
	return out
}
