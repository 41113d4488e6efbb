package lease

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/thawhq/thaw/internal/logtest"
)

const ttl = 10 * time.Second

var errDown = errors.New("dial tcp 127.0.0.1:4646: connect: connection refused")

// nomadLock is a fake of Nomad's Variables lock shared by the replicas: it
// frees an unrenewed lock 2*TTL after the last renewal it saw, and Holder
// names the last replica to acquire it, held or not (a client token does
// not see whether it is), as Nomad does.
type nomadLock struct {
	mu      sync.Mutex // mu guards the fields below.
	holder  string     // who holds the lock ("" none)
	last    string     // who acquired it last
	expires time.Time
	down    bool                     // every call fails, as with Nomad unreachable
	cut     map[string]bool          // replicas whose calls fail (a partition)
	hang    map[string]bool          // replicas whose calls block until their ctx ends
	slow    map[string]time.Duration // how long replicas wait for Renew's answer
	renews  int
	// onRelease, if set, is called with the releasing replica's ID.
	onRelease func(id string)
	renewed   time.Time // when the last renewal reached the lock
}

func newNomadLock() *nomadLock {
	return &nomadLock{cut: map[string]bool{}, hang: map[string]bool{}, slow: map[string]time.Duration{}}
}

// replica is one replica's handle on the lock: a Locker.
type replica struct {
	n  *nomadLock
	id string
}

func (n *nomadLock) locker(id string) Locker { return replica{n: n, id: id} }

func (n *nomadLock) set(f func(n *nomadLock)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n)
}

// holderLocked is who holds the lock now. Called with mu held.
func (n *nomadLock) holderLocked() string {
	if n.holder != "" && !time.Now().Before(n.expires) {
		n.holder = ""
	}
	return n.holder
}

// reach fails as an unreachable Nomad would: at once (refused) or when
// ctx ends (hung). Called with mu held; it unlocks mu while it hangs.
func (r replica) reach(ctx context.Context) error {
	if r.n.hang[r.id] {
		r.n.mu.Unlock()
		<-ctx.Done()
		r.n.mu.Lock()
		return ctx.Err()
	}
	if r.n.down || r.n.cut[r.id] {
		return errDown
	}
	return nil
}

func (r replica) Acquire(ctx context.Context) error {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if err := r.reach(ctx); err != nil {
		return err
	}
	if h := r.n.holderLocked(); h != "" {
		return ErrHeld
	}
	r.n.holder, r.n.last, r.n.expires = r.id, r.id, time.Now().Add(2*ttl)
	return nil
}

func (r replica) Renew(ctx context.Context) error {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if err := r.reach(ctx); err != nil {
		return err
	}
	if r.n.holderLocked() != r.id {
		return ErrHeld
	}
	r.n.renews++
	r.n.renewed = time.Now()
	r.n.expires = r.n.renewed.Add(2 * ttl)
	if d := r.n.slow[r.id]; d > 0 { // the answer takes d to come back
		r.n.mu.Unlock()
		time.Sleep(d)
		r.n.mu.Lock()
	}
	return nil
}

func (r replica) Release(ctx context.Context) error {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if err := r.reach(ctx); err != nil {
		return err
	}
	if r.n.holderLocked() != r.id {
		return ErrHeld
	}
	r.n.holder = ""
	if r.n.onRelease != nil {
		r.n.onRelease(r.id)
	}
	return nil
}

func (r replica) Holder(ctx context.Context) (string, error) {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if err := r.reach(ctx); err != nil {
		return "", err
	}
	return r.n.last, nil
}

func (r replica) TTL() time.Duration { return ttl }

// terms records the terms of every replica of a test, and fails it if
// two overlap.
type terms struct {
	t       *testing.T
	mu      sync.Mutex // mu guards leading and log.
	leading string
	log     []string // "a+" when a's term starts, "a-" when it ends
}

// lead returns id's lead function: it runs until its ctx ends, then
// returns err.
func (ts *terms) lead(id string, err error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		ts.mu.Lock()
		if ts.leading != "" {
			ts.t.Errorf("%s leads while %s still does", id, ts.leading)
		}
		ts.leading = id
		ts.log = append(ts.log, id+"+")
		ts.mu.Unlock()
		<-ctx.Done()
		ts.mu.Lock()
		ts.leading = ""
		ts.log = append(ts.log, id+"-")
		ts.mu.Unlock()
		return err
	}
}

func (ts *terms) now() (leading string, log string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.leading, strings.Join(ts.log, " ")
}

// running is a Lease's Run in the background.
type running struct {
	l      *Lease
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned err
	err    error
}

func start(t *testing.T, locker Locker, id string, lead func(ctx context.Context) error) *running {
	t.Helper()
	logs := &logtest.Buffer{}
	l, err := New(Config{Locker: locker, ID: id, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = l.Run(ctx, lead)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *running) leads() bool { return r.l.Status().Leader }

// wait returns what Run returned, once it has.
func (r *running) wait() error {
	<-r.done
	return r.err
}

// returned says whether Run has returned, and what.
func (r *running) returned() (bool, error) {
	select {
	case <-r.done:
		return true, r.err
	default:
		return false, nil
	}
}

// sleep lets d of fake time pass, and every goroutine settle.
func sleep(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}
