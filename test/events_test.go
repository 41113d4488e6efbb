package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/meter"
)

// eventTypes lists the events' types, in order.
func eventTypes(evs []meter.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// deployEvents is GET /deploy/{id}/events as dev.
func (p *thawProc) deployEvents(t *testing.T, id string) []meter.Event {
	t.Helper()
	r := p.do(t, http.MethodGet, "/deploy/"+id+"/events", devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /deploy/%s/events: %s", id, r)
	}
	var v struct{ Events []meter.Event }
	r.decode(t, &v)
	return v.Events
}

// sseFrame is one server-sent event of the events stream and when the
// client read it.
type sseFrame struct {
	id, event string
	ev        meter.Event
	at        time.Time
}

// followEvents opens the deployment's events stream as dev, with header
// (key, value pairs), and delivers its events until ctx ends.
func (p *thawProc) followEvents(ctx context.Context, t *testing.T, id string, header ...string) <-chan sseFrame {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Base+"/deploy/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+devToken)
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("events stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		t.Fatalf("events stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan sseFrame, 100)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && f.event != "":
				f.at = time.Now()
				select {
				case out <- f:
				case <-ctx.Done():
					return
				}
				f = sseFrame{}
			case strings.HasPrefix(line, "id: "):
				f.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				f.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &f.ev); err != nil {
					f.ev.Type = fmt.Sprintf("(data %q: %v)", line, err) // next reports it
				}
			}
		}
	}()
	return out
}

// next returns the next frame of the stream within timeout.
func next(t *testing.T, frames <-chan sseFrame, timeout time.Duration, what string) sseFrame {
	t.Helper()
	select {
	case f, ok := <-frames:
		if !ok {
			t.Fatalf("events stream ended waiting for %s", what)
		}
		if f.id != f.ev.ID || f.event != f.ev.Type {
			t.Errorf("frame id %q event %q, data id %q type %q: want the same", f.id, f.event, f.ev.ID, f.ev.Type)
		}
		return f
	case <-time.After(timeout):
		t.Fatalf("no event within %s waiting for %s", timeout, what)
		return sseFrame{}
	}
}

// TestDeploymentEvents: a deployment created and woken by one request tells
// its story in its events feed (created, scaled 0 -> 1, instance placed,
// ready with its cold start); its instances list shows the one running;
// the event stream delivers a change within 2 s and resumes after the
// last event a client saw.
func TestDeploymentEvents(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{})
	d := p.create(t, devToken, llmRequest("journal", "A100-80GB", 1, 4, 0, 1))
	if msg := checkChat(p.chat(t, "dev/journal", 4), 4); msg != "" {
		t.Fatalf("the waking request: %s", msg)
	}

	want := []string{"deployment.created", "scale", "instance.placed", "instance.ready"}
	var evs []meter.Event
	if !waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		evs = p.deployEvents(t, d.ID)
		return len(evs) >= len(want)
	}) {
		t.Fatalf("events %v, want %v", eventTypes(evs), want)
	}
	if got := eventTypes(evs); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	for i, e := range evs {
		t.Logf("event %s %s %s: %s %s", e.ID, e.At.Format(time.RFC3339Nano), e.Type, e.Message, e.Detail)
		if e.DeployID != d.ID || e.ID == "" || i > 0 && !e.At.After(evs[i-1].At) {
			t.Errorf("event %d %+v: want this deployment, an id, later than the one before", i, e)
		}
	}
	var scale struct {
		From, To int
		Reason   string
	}
	var ready struct {
		InstanceID       string  `json:"instance_id"`
		ColdStartSeconds float64 `json:"cold_start_seconds"`
	}
	if len(evs) == len(want) {
		if err := json.Unmarshal(evs[1].Detail, &scale); err != nil || scale.From != 0 || scale.To != 1 || scale.Reason == "" {
			t.Errorf("scale detail %s: want from 0 to 1 with a reason", evs[1].Detail)
		}
		if !strings.HasPrefix(evs[1].Message, "scaled 0 -> 1: ") {
			t.Errorf("scale message %q", evs[1].Message)
		}
		if err := json.Unmarshal(evs[3].Detail, &ready); err != nil || ready.InstanceID == "" || ready.ColdStartSeconds <= 0 || ready.ColdStartSeconds > 30 {
			t.Errorf("ready detail %s: want the instance and a cold start in seconds", evs[3].Detail)
		}
	}

	r := p.do(t, http.MethodGet, "/deploy/"+d.ID+"/instances", devToken, nil)
	var inst struct {
		Instances []struct {
			ID, State string
			ReadyAt   *time.Time `json:"ready_at"`
		}
	}
	r.decode(t, &inst)
	if len(inst.Instances) != 1 || inst.Instances[0].State != "running" || inst.Instances[0].ID != ready.InstanceID || inst.Instances[0].ReadyAt == nil {
		t.Errorf("instances: %s, want the one running, %s", r.Body, ready.InstanceID)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	frames := p.followEvents(ctx, t, d.ID)
	for i, w := range want {
		if f := next(t, frames, 5*time.Second, w); f.event != w || f.id != evs[i].ID {
			t.Errorf("stream event %d: %s %s, want %s %s", i, f.event, f.id, w, evs[i].ID)
		}
	}
	put := time.Now()
	if r := p.do(t, http.MethodPut, "/deploy/"+d.ID, devToken, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 2}}); r.Status != http.StatusOK {
		t.Fatalf("PUT: %s", r)
	}
	f := next(t, frames, 2*time.Second, "deployment.updated")
	t.Logf("deployment.updated streamed %v after the PUT: %s", f.at.Sub(put), f.ev.Message)
	if f.event != "deployment.updated" || !strings.Contains(string(f.ev.Detail), `"max_instances":2`) {
		t.Errorf("streamed %s %s, want deployment.updated with max_instances 2", f.event, f.ev.Detail)
	}
	cancel()

	// A client that reconnects after the placed event gets what followed.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	frames = p.followEvents(ctx2, t, d.ID, "Last-Event-ID", evs[2].ID)
	var got []string
	for range 2 {
		got = append(got, next(t, frames, 5*time.Second, "the events after the placed one").event)
	}
	if fmt.Sprint(got) != "[instance.ready deployment.updated]" {
		t.Errorf("resumed after instance.placed: %v, want [instance.ready deployment.updated]", got)
	}
}
