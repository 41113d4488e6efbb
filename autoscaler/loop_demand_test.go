package autoscaler

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/internal/redistest"
)

// fakeModelServer serves vLLM's load gauges the way thaw's simulator and
// vLLM do: num_requests_running is the requests it is serving now.
type fakeModelServer struct {
	mu      sync.Mutex // mu guards running.
	running int
}

func (s *fakeModelServer) setRunning(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = n
}

// RoundTrip answers GET /metrics in memory, as the scraper's transport.
func (s *fakeModelServer) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	rec := httptest.NewRecorder()
	fmt.Fprintf(rec, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running %d\n"+
		"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n", running)
	return rec.Result(), nil
}

// TestLoopNoPhantomWakeAfterIdle runs the loop over the demand plumbing that
// `thaw dev` wires (a demand.Reporter for the activator, demand.Reader,
// demand.Scraper of the model server's metrics, wakes through
// demand.ListenWakes) on Redis, with an idle timeout (3s) shorter than the
// panic window (6s). Each cycle is one request to a cold deployment, then
// silence: the deployment must go 0 -> 1 -> 0 once per request, and stay at
// zero through a whole stable window after the last one.
func TestLoopNoPhantomWakeAfterIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		_, rdb := redistest.New(t)
		log := slog.New(slog.DiscardHandler)

		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		model := &fakeModelServer{}
		reporter, err := demand.NewReporter(demand.ReporterConfig{Redis: rdb, Replica: "activator", Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		scraper, err := demand.NewScraper(demand.ScraperConfig{
			Redis: rdb,
			Targets: func() []demand.Target {
				if fleet.Targets()[0].Current == 0 {
					return nil // stopped: nothing to scrape
				}
				return []demand.Target{{DeployID: "a", Addr: "a-0:8000"}}
			},
			HTTP:   &http.Client{Transport: model},
			Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		loop, err := NewLoop(LoopConfig{
			Decide: Config{IdleTimeout: 3 * time.Second},
			Fleet:  fleet,
			Demand: demand.Reader{Redis: rdb},
			Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		run := func(name string, f func(context.Context) error) {
			wg.Go(func() {
				if err := f(ctx); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			})
		}
		run("reporter", reporter.Run)
		run("wakes", func(ctx context.Context) error { return demand.ListenWakes(ctx, rdb, loop.Wake) })
		run("loop", loop.Run)
		// The scraper ticks a quarter second after the loop, so which of
		// the two reads Redis first at a tick never depends on scheduling.
		time.Sleep(250 * time.Millisecond)
		run("scraper", scraper.Run)
		defer func() {
			cancel()
			wg.Wait()
		}()

		// request is one request through an activator to a cold
		// deployment, at c: held and a wake at c+0.5s, forwarded to the
		// started instance at c+1.5s, answered at c+2.5s.
		request := func(c time.Duration) {
			sleepUntil(start.Add(c + 500*time.Millisecond))
			reporter.Set("a", 1, 0)
			reporter.Wake("a")
			sleepUntil(start.Add(c + 1500*time.Millisecond))
			reporter.Set("a", 0, 1)
			model.setRunning(1)
			sleepUntil(start.Add(c + 2500*time.Millisecond))
			reporter.Set("a", 0, 0)
			model.setRunning(0)
		}
		const cycles = 3
		var want []call
		for i := range cycles {
			c := time.Duration(i) * 20 * time.Second
			request(c)
			want = append(want,
				call{At: c + 500*time.Millisecond, ID: "a", N: 1, Reason: "wake: 1 request needs 1 x 8"},
				// The tick at c+3s still reads the scrape of c+2.25s (1
				// running), so c+4s is the first tick without demand.
				call{At: c + 7*time.Second, ID: "a", N: 0, Reason: "idle 3s: scale to min 0"},
			)
		}
		// Silence for a whole stable window after the last scale-down.
		sleepUntil(start.Add((cycles-1)*20*time.Second + 7*time.Second + DefaultStableWindow + 2*time.Second))
		synctest.Wait()
		// The reporter writes at most every MinInterval (10ms): when its
		// Run goroutine flushes the Set between the Set and the Wake (on
		// another CPU), the wake goes out 10ms later. Either is right.
		if diff := cmp.Diff(want, to100ms(fleet.Calls())); diff != "" {
			t.Fatalf("SetDesired calls (-want +got, times to 100ms):\n%s", diff)
		}

		// A request after all that still wakes the deployment at once
		// (between ticks, so no tick's write delays the reporter).
		time.Sleep(500 * time.Millisecond)
		at := time.Since(start)
		reporter.Set("a", 1, 0)
		reporter.Wake("a")
		synctest.Wait()
		want = append(want, call{At: at, ID: "a", N: 1, Reason: "wake: 1 request needs 1 x 8"})
		if diff := cmp.Diff(to100ms(want), to100ms(fleet.Calls())); diff != "" {
			t.Errorf("SetDesired calls after a new request (-want +got):\n%s", diff)
		}
	})
}

// to100ms truncates the calls' times to 100ms: the reporter may flush a
// Set 10ms before or after the Wake that follows it.
func to100ms(calls []call) []call {
	out := slices.Clone(calls)
	for i := range out {
		out[i].At = out[i].At.Truncate(100 * time.Millisecond)
	}
	return out
}

// sleepUntil sleeps until t (fake time inside a synctest bubble) and lets
// every goroutine of the bubble settle.
func sleepUntil(t time.Time) {
	time.Sleep(time.Until(t))
	synctest.Wait()
}
