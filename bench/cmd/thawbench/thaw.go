package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/thawhq/thaw/bench"
)

// token is user dev's API token in every thaw dev the bench starts.
const token = "thaw_bench_token"

// thawProc is one `thaw dev` started by the bench, on a free loopback port
// and a fresh data directory.
type thawProc struct {
	Base string // http://127.0.0.1:port
	// Metrics is the operators' listener (--metrics-addr), http://127.0.0.1:port.
	Metrics string
	PID     int
	cmd     *exec.Cmd
	dir     string
	done    chan struct{} // closed when the process has exited

	// mu guards tail and watchers.
	mu       sync.Mutex
	tail     []string            // the last log lines, for error reports
	watchers []func(line string) // called for every log line, in order
}

// serverStarted is localrt's "model server started" log line: the instance's
// process is running (loading weights) and will listen on Addr.
type serverStarted struct {
	Deploy string
	Addr   string
	Seen   time.Time
}

// startThaw starts bin/thaw dev with extra flags and waits for /healthz.
func startThaw(bin string, extra ...string) (*thawProc, error) {
	dir, err := os.MkdirTemp("", "thawbench-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return launchThaw(bin, dir, addr, append([]string{"dev", "--addr", addr, "--data-dir", dir}, extra...))
}

// launchThaw runs bin with args (serving on addr, data in dir, which Stop
// removes) and waits for /healthz.
func launchThaw(bin, dir, addr string, args []string) (*thawProc, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &thawProc{Base: "http://" + addr, Metrics: "http://" + metricsAddr, dir: dir, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append(args, "--metrics-addr", metricsAddr)...)
	p.cmd.Env = append(os.Environ(), "THAW_DEV_TOKEN="+token, "OTEL_EXPORTER_OTLP_ENDPOINT=")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p.PID = p.cmd.Process.Pid
	go p.readLog(stderr)
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.Base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			p.Stop()
			return nil, fmt.Errorf("thaw %s exited at start:\n%s", args[0], p.Tail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("thaw %s not healthy within 30s:\n%s", args[0], p.Tail())
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (p *thawProc) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > 12 {
			p.tail = p.tail[len(p.tail)-12:]
		}
		ws := p.watchers
		p.mu.Unlock()
		for _, w := range ws {
			w(line)
		}
	}
}

// Tail is the last lines thaw dev logged.
func (p *thawProc) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// WatchStarts returns a channel of the "model server started" events logged
// from now on (buffered; events beyond its room are dropped).
func (p *thawProc) WatchStarts() <-chan serverStarted {
	ch := make(chan serverStarted, 64)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watchers = append(p.watchers, func(line string) {
		if !strings.Contains(line, `msg="model server started"`) {
			return
		}
		ev := serverStarted{Deploy: logField(line, "deploy"), Addr: logField(line, "addr"), Seen: time.Now()}
		select {
		case ch <- ev:
		default:
		}
	})
	return ch
}

// WatchMsg returns a channel of the moments (at the bench) log lines with
// msg were read from now on (buffered; events beyond its room are dropped).
func (p *thawProc) WatchMsg(msg string) <-chan time.Time {
	ch := make(chan time.Time, 64)
	needle := fmt.Sprintf("msg=%q", msg)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watchers = append(p.watchers, func(line string) {
		if strings.Contains(line, needle) {
			select {
			case ch <- time.Now():
			default:
			}
		}
	})
	return ch
}

// logField is the value of key in a slog text line, unquoted values only.
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// Stop ends thaw dev (SIGTERM, then SIGKILL after 10 s; its model servers
// die with it) and removes its data directory.
func (p *thawProc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		<-p.done
	}
	os.RemoveAll(p.dir)
}

// deployment is the part of the deploy object the bench reads.
type deployment struct {
	ID        string `json:"deploy_id"`
	FullName  string `json:"full_name"`
	Status    string `json:"status"`
	Instances struct {
		Running int    `json:"running"`
		Pending int    `json:"pending"`
		Desired int    `json:"desired"`
		Reason  string `json:"reason"`
	} `json:"instances"`
}

// api sends a deploy API request and decodes the answer into out (if not nil).
func (p *thawProc) api(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// create makes a deployment of one A100 per instance.
func (p *thawProc) create(ctx context.Context, name string, batch, minInst, maxInst int) (deployment, error) {
	return p.createOn(ctx, "A100-80GB", name, batch, minInst, maxInst)
}

// createOn makes a deployment of one gpu per instance.
func (p *thawProc) createOn(ctx context.Context, gpu, name string, batch, minInst, maxInst int) (deployment, error) {
	var d deployment
	err := p.api(ctx, http.MethodPost, "/deploy/llm", map[string]any{
		"model_name": name, "gpu": gpu, "num_gpus": 1, "max_batch_size": batch,
		"hf":       map[string]string{"repo": "bench/" + name},
		"settings": map[string]int{"min_instances": minInst, "max_instances": maxInst},
	}, &d)
	return d, err
}

func (p *thawProc) get(ctx context.Context, id string) (deployment, error) {
	var d deployment
	err := p.api(ctx, http.MethodGet, "/deploy/"+id, nil, &d)
	return d, err
}

func (p *thawProc) remove(ctx context.Context, id string) error {
	return p.api(ctx, http.MethodDelete, "/deploy/"+id, nil, nil)
}

// waitInstances polls the deployment every 20 ms until cond holds.
func (p *thawProc) waitInstances(ctx context.Context, id string, timeout time.Duration, cond func(deployment) bool) (deployment, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, err := p.get(ctx, id)
		if err == nil && cond(d) {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, errors.Join(fmt.Errorf("deployment %s: condition not reached within %v (last: %+v)", id, timeout, d.Instances), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rssKB is the process's resident memory now and at its peak, in kB.
func rssKB(pid int) (now, peak int64, err error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	if now, err = bench.ProcField(path, "VmRSS"); err != nil {
		return 0, 0, err
	}
	peak, err = bench.ProcField(path, "VmHWM")
	return now, peak, err
}
