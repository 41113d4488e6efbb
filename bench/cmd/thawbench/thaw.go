package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
	"github.com/thawhq/thaw/test/testnet"

	"github.com/thawhq/thaw/bench"
)

// token is user dev's API token in every thaw dev the bench starts.
const token = "thaw_bench_token"

// thawProc is one `thaw dev` started by the bench, on a free loopback port
// and a fresh data directory; its Client talks to its deploy API as user
// dev.
type thawProc struct {
	*e2e.Thaw
	*client.Client
	PID int
	dir string

	// mu guards watchers.
	mu       sync.Mutex
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
	return launchThaw(bin, dir, append([]string{"dev", "--data-dir", dir}, extra...))
}

// launchThaw runs bin with args and env (added to the bench's; data in dir,
// which Stop removes) and waits for /healthz.
func launchThaw(bin, dir string, args []string, env ...string) (*thawProc, error) {
	p := &thawProc{dir: dir}
	pr, pw := io.Pipe()
	go p.readLog(pr)
	th, err := e2e.StartThaw(e2e.ThawConfig{
		Bin:  bin,
		Args: args,
		Env:  append([]string{"THAW_DEV_TOKEN=" + token}, env...),
		Proc: e2e.ProcConfig{Setpgid: true, Output: pw, Keep: 64 << 10, StopTimeout: 10 * time.Second},
	})
	if err != nil {
		pw.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { <-th.Done(); pw.Close() }()
	p.Thaw, p.PID = th, th.PID()
	p.Client = client.New(th.Base, token)
	return p, nil
}

func freeAddr() (string, error) { return testnet.FreeAddr() }

// readLog calls the watchers for each line thaw logs.
func (p *thawProc) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		ws := p.watchers
		p.mu.Unlock()
		for _, w := range ws {
			w(line)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Tail is the last lines thaw dev logged.
func (p *thawProc) Tail() string { return p.Out.TailLines(12) }

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

// Stop ends thaw dev (SIGTERM, then SIGKILL to its process group after
// 10 s; its model servers die with it) and removes its data directory.
func (p *thawProc) Stop() {
	p.Thaw.Stop()
	os.RemoveAll(p.dir)
}

// create makes a deployment of one A100 per instance.
func (p *thawProc) create(ctx context.Context, name string, batch, minInst, maxInst int) (deploy.View, error) {
	return p.createOn(ctx, "A100-80GB", name, batch, minInst, maxInst)
}

// createOn makes a deployment of one gpu per instance.
func (p *thawProc) createOn(ctx context.Context, gpu, name string, batch, minInst, maxInst int) (deploy.View, error) {
	one := 1
	return p.Create(ctx, deploy.CreateRequest{
		ModelName: name, GPU: gpu, NumGPUs: &one, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: "bench/" + name},
		Settings: &deploy.Settings{MinInstances: minInst, MaxInstances: maxInst},
	})
}

func (p *thawProc) get(ctx context.Context, id string) (deploy.View, error) { return p.Get(ctx, id) }

func (p *thawProc) remove(ctx context.Context, id string) error { return p.Delete(ctx, id) }

// waitInstances polls the deployment every 20 ms until cond holds.
func (p *thawProc) waitInstances(ctx context.Context, id string, timeout time.Duration, cond func(deploy.View) bool) (deploy.View, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d deploy.View
	var err error
	if e2e.EventuallyCtx(ctx, 20*time.Millisecond, func() bool {
		d, err = p.get(ctx, id)
		return err == nil && cond(d)
	}) {
		return d, nil
	}
	return d, errors.Join(fmt.Errorf("deployment %s: condition not reached within %v (last: %+v)", id, timeout, d.Instances), err)
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
