package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

const (
	chatPath        = "/v1/openai/chat/completions"
	completionsPath = "/v1/openai/completions"
)

// leaving is the state of TestClientCancellation: one deployment, and the
// requests its clients abandoned or completed, by mark.
type leaving struct {
	p              *thawProc
	log            requestLog
	id             string
	byName, byID   string // the model as "dev/<name>" and as "deploy_id:<id>"
	batch          int
	startup        time.Duration
	py, curl       string
	left           []string // abandoned after reaching a model server
	neverSent      []string // abandoned while held: no model server may see them
	completed      []string // answered in full
	unwedgedRounds int
}

// TestClientCancellation: real clients that leave (the OpenAI Python SDK,
// curl, a socket closed with a TCP reset, Go's net/http with a cancelled
// context) while held for a cold start, while queued behind busy slots,
// before the response headers and mid-stream, on chat, completions and the
// native path, naming the model "owner/name" or "deploy_id:<id>". After
// each group of clients an operator sees nothing in flight and nothing held
// within 2s, and more requests than the instance's slots are all answered;
// at the end the model servers' request log shows every abandoned request
// cancelled ("aborted") soon after it started, and none of those abandoned
// while held forwarded at all, and the deployment scales to zero after its
// idle timeout, which a leaked slot would prevent.
func TestClientCancellation(t *testing.T) {
	py, err := e2e.PythonSDK()
	if err != nil {
		t.Fatalf("the OpenAI Python SDK is not installed: %v", err)
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is not installed (%v): make deps must install it", err)
	}
	const idle = 4 * time.Second
	l := &leaving{batch: 2, startup: 6 * time.Second, py: py, curl: curl}
	l.log = requestLog(filepath.Join(t.TempDir(), "requests.jsonl"))
	// 20 tokens/s: a 200-token answer takes 10s, so every client below
	// leaves long before its request would end by itself.
	l.p = startThaw(t, thawOpts{SimStartup: l.startup, TokensPerSecond: 20, IdleTimeout: idle, SimRequestLog: string(l.log)})
	name := uniqueName("leave")
	d := l.p.create(t, devToken, llmRequest(name, "A100-80GB", 1, l.batch, 0, 1))
	l.id, l.byName, l.byID = d.ID, "dev/"+name, "deploy_id:"+d.ID

	t.Run("while held for a cold start", l.whileHeld)
	t.Run("OpenAI Python SDK", l.pythonSDK)
	t.Run("curl -m 1 -N mid-stream", l.curlStream)
	t.Run("TCP reset", l.tcpReset)
	t.Run("Go net/http context cancelled", l.goCancel)
	t.Run("Go net/http while queued behind busy slots", l.whileQueued)

	for _, m := range l.left {
		rec, ok := l.log.wait(t, m, 3*time.Second)
		if !ok {
			continue
		}
		if !rec.Aborted {
			t.Errorf("%s: the model server finished the request (aborted false after %v): it never saw the client leave", m, rec.End.Sub(rec.Start))
		} else if ran := rec.End.Sub(rec.Start); ran > 5*time.Second {
			t.Errorf("%s: the model server saw the request cancelled only %v after it started; its client left within about a second", m, ran)
		}
	}
	for _, m := range l.neverSent {
		if recs := l.log.find(t, m); len(recs) > 0 {
			t.Errorf("%s: the client left while its request was held, yet it was sent to a model server: %+v", m, recs)
		}
	}
	for _, m := range l.completed {
		if rec, ok := l.log.wait(t, m, 3*time.Second); ok && rec.Aborted {
			t.Errorf("%s: answered in full, yet logged as aborted by the model server", m)
		}
	}

	lastTraffic := time.Now()
	l.p.waitDeploy(t, l.id, idle+20*time.Second, "scaled to zero after the idle timeout", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Pending == 0
	})
	t.Logf("scaled to zero %v after the last request (idle timeout %v)", time.Since(lastTraffic), idle)
	l.p.slotsFreed(t, l.id, "after scale to zero")
}

// unwedged checks, after a group of clients left, that the deployment's
// slots are all free and usable.
func (l *leaving) unwedged(t *testing.T, what string) {
	t.Helper()
	l.p.slotsFreed(t, l.id, what)
	l.unwedgedRounds++
	marks := l.p.unwedged(t, l.byName, l.batch, fmt.Sprintf("complete-%d", l.unwedgedRounds))
	l.completed = append(l.completed, marks...)
}

// warm makes sure the deployment has a ready instance, so that the next
// client reaches a model server at once.
func (l *leaving) warm(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := l.p.postRead(ctx, chatPath, "warm", chatBody(l.byName, 1, false))
	if err != nil {
		t.Fatalf("warming the deployment: %v", err)
	}
	if msg := checkChat(r, 1); msg != "" {
		t.Fatalf("warming the deployment: %s", msg)
	}
}

func (l *leaving) whileHeld(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cases := []struct {
		mark, path string
		body       any
	}{
		{"held-chat-stream-by-name", chatPath, chatBody(l.byName, 200, true)},
		{"held-completions-by-id", completionsPath, completionReq(l.byID, 200, false)},
		{"held-native", "/v1/inference/" + l.byName, nativeReq(200)},
	}
	errc := make(chan string, len(cases))
	sent := time.Now()
	for _, c := range cases {
		l.neverSent = append(l.neverSent, c.mark)
		go func() {
			resp, err := l.p.post(ctx, c.path, c.mark, c.body)
			switch {
			case err == nil:
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				errc <- fmt.Sprintf("%s: answered while its deployment was still cold: HTTP %d %s", c.mark, resp.StatusCode, b)
			case !errors.Is(err, context.Canceled):
				errc <- fmt.Sprintf("%s: %v, want context.Canceled", c.mark, err)
			default:
				errc <- ""
			}
		}()
	}
	if !l.p.waitSlots(t, l.id, "3 requests to a cold deployment", 3*time.Second, func(_, held float64) bool { return held >= 3 }) {
		t.FailNow()
	}

	// curl -m 1 gives up after a second, held all along.
	body, _ := json.Marshal(chatBody(l.byName, 200, false))
	cmd := exec.Command(l.curl, "-sS", "-m", "1", "-H", "Authorization: Bearer "+devToken,
		"-H", "Content-Type: application/json", "-H", caseHeader+": held-curl", "-d", string(body), l.p.Base+chatPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	l.neverSent = append(l.neverSent, "held-curl")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	sawCurl, curlDone := false, false
	for !curlDone {
		select {
		case err = <-exited:
			curlDone = true
		case <-time.After(20 * time.Millisecond):
			if _, held, _ := l.p.slotGauges(t, l.id); held >= 4 {
				sawCurl = true
			}
		}
	}
	if code := exitCode(err); code != 28 {
		t.Errorf("curl -m 1 on a held request: exit %d (%v), want 28 (timed out): %s", code, err, out.String())
	}
	if !sawCurl {
		t.Errorf("curl's request never showed as held (thaw_requests_held did not reach 4)")
	}
	cancel()
	for range cases {
		if msg := <-errc; msg != "" {
			t.Error(msg)
		}
	}
	l.p.slotsFreed(t, l.id, "4 clients left while held")
	if since := time.Since(sent); since > l.startup-time.Second {
		t.Errorf("checked %v after the first request, too close to the %v cold start: the gauge may have dropped because the instance came up", since, l.startup)
	}
	l.unwedged(t, "after the held clients left")
}

// pyResult is one line of clients_check.py.
type pyResult struct {
	Case      string   `json:"case"`
	Chunks    []string `json:"chunks"`
	Error     *string  `json:"error"`
	Elapsed   float64  `json:"elapsed_s"`
	Exception string   `json:"exception"`
	Ready     bool     `json:"ready"`
}

func (l *leaving) pythonSDK(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(l.py, filepath.Join(root, "test", "testdata", "clients_check.py"), l.p.Base+"/v1/openai", devToken, l.byName)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", l.py, err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("clients_check.py: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("clients_check.py did not exit when its input ended\n%s", stderr.String())
			<-done
		}
	}()
	lines := make(chan pyResult)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r pyResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r.Exception = fmt.Sprintf("unreadable line %q: %v", sc.Text(), err)
			}
			lines <- r
		}
	}()
	next := func(what string) pyResult {
		t.Helper()
		select {
		case r, ok := <-lines:
			if !ok {
				t.Fatalf("clients_check.py exited before %s\n%s", what, stderr.String())
			}
			return r
		case <-time.After(60 * time.Second):
			t.Fatalf("clients_check.py: no answer for %s within 60s\n%s", what, stderr.String())
		}
		return pyResult{}
	}
	if r := next("loading the SDK"); !r.Ready {
		t.Fatalf("clients_check.py: %+v\n%s", r, stderr.String())
	}

	for _, c := range []string{"break", "timeout", "with"} {
		l.warm(t)
		if _, err := io.WriteString(stdin, c+"\n"); err != nil {
			t.Fatalf("clients_check.py: %v\n%s", err, stderr.String())
		}
		r := next(c)
		l.left = append(l.left, "py-"+c)
		switch {
		case r.Exception != "":
			t.Errorf("python SDK %s: %s", c, r.Exception)
		case c == "timeout" && (r.Error == nil || *r.Error != "APITimeoutError"):
			t.Errorf("python SDK with_options(timeout=0.5) on a 10s answer: %+v, want APITimeoutError", r)
		case c == "timeout" && r.Elapsed > 3:
			t.Errorf("python SDK with_options(timeout=0.5) gave up after %.1fs", r.Elapsed)
		case c != "timeout" && len(r.Chunks) != 2:
			t.Errorf("python SDK %s: read %d chunks before leaving, want 2: %+v", c, len(r.Chunks), r)
		}
		// The Python process is still running: a connection it kept open
		// would still hold a slot.
		l.p.slotsFreed(t, l.id, "python SDK "+c)
	}
	l.unwedged(t, "after the python SDK left")
}

// exitCode is a finished command's exit status, -1 if it did not exit.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func (l *leaving) curlStream(t *testing.T) {
	l.warm(t)
	body, _ := json.Marshal(chatBody(l.byName, 200, true))
	cmd := exec.Command(l.curl, "-sS", "-N", "-m", "1", "-H", "Authorization: Bearer "+devToken,
		"-H", "Content-Type: application/json", "-H", caseHeader+": curl-stream", "-d", string(body), l.p.Base+chatPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	l.left = append(l.left, "curl-stream")
	if code := exitCode(err); code != 28 {
		t.Errorf("curl -m 1 -N on a 10s stream: exit %d (%v), want 28 (timed out): %s", code, err, stderr.String())
	}
	if !bytes.Contains(out, []byte("data:")) {
		t.Errorf("curl -N read no event before it left (it should have been streaming): %q", out)
	}
	l.p.slotsFreed(t, l.id, "curl -m 1 -N")
	l.unwedged(t, "after curl left")
}

func (l *leaving) tcpReset(t *testing.T) {
	l.warm(t)
	send := func(mark string, body any) *rawConn {
		b, _ := json.Marshal(body)
		c := l.p.dialRaw(t)
		c.send(t, requestHead(http.MethodPost, chatPath, "Authorization: Bearer "+devToken, "Content-Type: application/json",
			caseHeader+": "+mark, fmt.Sprintf("Content-Length: %d", len(b)))+string(b))
		l.left = append(l.left, mark)
		return c
	}

	// Mid-stream: the response headers and a first event came back.
	c := send("rst-mid-stream", chatBody(l.byID, 200, true))
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("reading the stream's response headers: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: HTTP %d", resp.StatusCode)
	}
	if ev, err := readEvents(bufio.NewReader(resp.Body), 1); err != nil {
		t.Fatalf("stream: no first event (%v): %q", err, ev)
	}
	c.reset()
	l.p.slotsFreed(t, l.id, "TCP reset mid-stream")

	// Before the response headers: a non-streamed answer still generating.
	c = send("rst-before-headers", chatBody(l.byName, 200, false))
	if l.atModelServer(t, "rst-before-headers") {
		c.reset()
		l.p.slotsFreed(t, l.id, "TCP reset before the response headers")
	}
	l.unwedged(t, "after the TCP resets")
}

func (l *leaving) goCancel(t *testing.T) {
	l.warm(t)
	cases := []struct {
		mark, path string
		body       any
		stream     bool
	}{
		{"go-chat-stream-by-name", chatPath, chatBody(l.byName, 200, true), true},
		{"go-chat-stream-by-id", chatPath, chatBody(l.byID, 200, true), true},
		{"go-completions-stream-by-name", completionsPath, completionReq(l.byName, 200, true), true},
		{"go-completions-stream-by-id", completionsPath, completionReq(l.byID, 200, true), true},
		{"go-chat-by-id", chatPath, chatBody(l.byID, 200, false), false},
		{"go-completions-by-name", completionsPath, completionReq(l.byName, 200, false), false},
		{"go-native", "/v1/inference/" + l.byName, nativeReq(200), false},
	}
	for _, c := range cases {
		l.left = append(l.left, c.mark)
		ctx, cancel := context.WithCancel(context.Background())
		if c.stream {
			resp, err := l.p.post(ctx, c.path, c.mark, c.body)
			if err != nil {
				cancel()
				t.Errorf("%s: %v", c.mark, err)
				continue
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: HTTP %d", c.mark, resp.StatusCode)
			} else if ev, err := readEvents(bufio.NewReader(resp.Body), 2); err != nil {
				t.Errorf("%s: fewer than 2 events before leaving (%v): %q", c.mark, err, ev)
			}
			cancel()
			resp.Body.Close()
		} else {
			// No response headers before the whole answer: leave while
			// the model server generates it.
			errc := make(chan error, 1)
			go func() {
				resp, err := l.p.post(ctx, c.path, c.mark, c.body)
				if err == nil {
					resp.Body.Close()
					err = fmt.Errorf("answered HTTP %d before the client left", resp.StatusCode)
				}
				errc <- err
			}()
			l.atModelServer(t, c.mark)
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v, want context.Canceled", c.mark, err)
			}
		}
		l.p.slotsFreed(t, l.id, c.mark)
	}
	l.unwedged(t, "after the Go clients left")
}

// atModelServer waits until a request is in flight, then a little longer:
// the slot is taken before the request is sent, and a client that left
// before the model server got the request would leave nothing to cancel
// there. The request takes 10s to answer; it is still generating after.
func (l *leaving) atModelServer(t *testing.T, what string) bool {
	t.Helper()
	if !l.p.waitSlots(t, l.id, what+" in flight", 5*time.Second, func(inflight, _ float64) bool { return inflight >= 1 }) {
		return false
	}
	time.Sleep(500 * time.Millisecond)
	return true
}

// whileQueued: with both slots busy, a third client queues; it leaves, and
// the two streams go on, then leave too.
func (l *leaving) whileQueued(t *testing.T) {
	l.warm(t)
	var cancels []context.CancelFunc
	var bodies []io.Closer
	leave := func() {
		for _, c := range cancels {
			c()
		}
		for _, b := range bodies {
			b.Close()
		}
		cancels, bodies = nil, nil
	}
	defer leave()
	for i := range l.batch {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		mark := fmt.Sprintf("busy-%d", i)
		resp, err := l.p.post(ctx, chatPath, mark, chatBody(l.byName, 200, true))
		if err != nil {
			t.Fatalf("%s: %v", mark, err)
		}
		bodies = append(bodies, resp.Body)
		l.left = append(l.left, mark)
		if ev, err := readEvents(bufio.NewReader(resp.Body), 1); err != nil {
			t.Fatalf("%s: no first event (%v): %q", mark, err, ev)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := l.p.post(ctx, completionsPath, "queued", completionReq(l.byID, 4, false))
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered HTTP %d while both slots were busy", resp.StatusCode)
		}
		errc <- err
	}()
	l.neverSent = append(l.neverSent, "queued")
	queued := l.p.waitSlots(t, l.id, "a request queued behind 2 busy slots", 3*time.Second, func(inflight, held float64) bool {
		return inflight == float64(l.batch) && held == 1
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("the queued request: %v, want context.Canceled", err)
	}
	if queued {
		l.p.waitSlots(t, l.id, "the queued client left; the 2 streams go on", 2*time.Second, func(inflight, held float64) bool {
			return inflight == float64(l.batch) && held == 0
		})
	}
	leave()
	l.p.slotsFreed(t, l.id, "the streams left")
	l.unwedged(t, "after the queued client and the streams left")
}
