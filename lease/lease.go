package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ErrHeld is a Locker's answer when another replica holds the lock: to
// Acquire, it is held; to Renew, this replica lost it.
var ErrHeld = errors.New("the lock is held by another replica")

// errSilent is why a term ends when no renewal succeeded within TTL.
var errSilent = errors.New("no renewal succeeded within the lock's TTL")

// releaseTimeout bounds the Release of a graceful stop, which runs after
// Run's context is done.
const releaseTimeout = 5 * time.Second

// Locker is one lock shared by the replicas (nomad.Lock in production).
// Lease calls it from one goroutine at a time.
type Locker interface {
	// Acquire takes the lock; an error wrapping ErrHeld if another
	// holds it.
	Acquire(ctx context.Context) error
	// Renew extends this replica's hold for TTL; an error wrapping
	// ErrHeld if this replica lost it.
	Renew(ctx context.Context) error
	// Release frees the lock at once, if this replica holds it.
	Release(ctx context.Context) error
	// Holder returns the ID of the replica holding the lock, "" if
	// none or unknown. Lease asks it only after Acquire found the lock
	// held, so it may name the replica that acquired it last.
	Holder(ctx context.Context) (string, error)
	// TTL is how long a hold lasts without renewal, as this replica
	// counts it: the lock's owner frees it no sooner than 2*TTL after
	// the last renewal (Nomad's Variables lock).
	TTL() time.Duration
}

// Config configures a Lease.
type Config struct {
	// Locker is the lock the replicas share. Required.
	Locker Locker
	// ID names this replica, as Locker.Holder reports it. Required.
	ID string
	// Retry is how often a follower campaigns (and then reads who
	// leads), and how soon a leader retries a failed renewal. Default 1s.
	Retry time.Duration
	// Logger receives "lease: acquired", "lease: lost", "lease:
	// released" and warnings about the lock. Default slog.Default().
	Logger *slog.Logger
}

// Status is a replica's view of the election, for /healthz.
type Status struct {
	// Leader says this replica leads.
	Leader bool
	// Holder is the ID of the leader as last seen: "" when unknown or
	// none; Config.ID when Leader.
	Holder string
	// Since is when Leader last changed (when Run started, if never).
	Since time.Time
}

// Lease runs a function only while this replica holds the lock.
type Lease struct {
	cfg Config
	ttl time.Duration

	mu sync.Mutex // mu guards st.
	st Status
}

// New returns a Lease; it starts nothing until Run.
func New(cfg Config) (*Lease, error) {
	if cfg.Locker == nil || cfg.ID == "" {
		return nil, errors.New("lease: Locker and ID are required")
	}
	ttl := cfg.Locker.TTL()
	if ttl <= 0 {
		return nil, fmt.Errorf("lease: the lock's TTL is %v, want > 0", ttl)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Lease{cfg: cfg, ttl: ttl}, nil
}

// Status returns this replica's view of the election. Safe for concurrent
// use.
func (l *Lease) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// setLeader records that this replica starts or stops leading, at now.
func (l *Lease) setLeader(leader bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Leader, l.st.Since = leader, now
	l.st.Holder = ""
	if leader {
		l.st.Holder = l.cfg.ID
	}
}

// setHolder records who leads, as a follower saw it.
func (l *Lease) setHolder(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.st.Leader {
		l.st.Holder = id
	}
}

// Run campaigns until ctx is done. Each time it wins it runs
// lead(termCtx), one term. termCtx is cancelled when the lock is lost
// (Renew says ErrHeld, or no renewal succeeded within TTL of the last
// successful one being sent), and Run waits for lead to return before it
// campaigns again. If lead returns an error while ctx is live, Run
// releases the lock and returns that error; if lead returns nil, Run
// releases the lock and campaigns again. When ctx is done, Run cancels the
// term, waits for lead, releases the lock (on a fresh context, bounded)
// and returns nil. Errors talking to the lock are logged and retried:
// Run never returns because of them. A campaign's calls are bounded by
// TTL/4, so a request Nomad never answers cannot stall the campaign.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	l.mu.Lock()
	l.st = Status{Since: time.Now()}
	l.mu.Unlock()
	w := warner{log: l.cfg.Logger, what: "lease: campaign failed"}
	for ctx.Err() == nil {
		won, err := l.campaign(ctx)
		if ctx.Err() != nil {
			break
		}
		w.note(err)
		if won != nil {
			if err := l.term(ctx, *won, lead); err != nil {
				return err
			}
			if ctx.Err() != nil {
				break
			}
		}
		wait(ctx, l.cfg.Retry)
	}
	return nil
}

// campaign tries to acquire the lock and returns when the Acquire was
// sent if it won; if another holds it, it records who. It acquires rather
// than reading first: Nomad hides a Variable's lock from tokens other than
// management ones, so a read cannot tell a held lock from a free one.
func (l *Lease) campaign(ctx context.Context) (*time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/4) // a hung request must not stop the campaign
	defer cancel()
	sent := time.Now()
	err := l.cfg.Locker.Acquire(ctx)
	if err == nil {
		return &sent, nil
	}
	if !errors.Is(err, ErrHeld) {
		l.setHolder("")
		return nil, fmt.Errorf("acquire the lock: %w", err)
	}
	holder, err := l.cfg.Locker.Holder(ctx)
	if err != nil {
		l.setHolder("")
		return nil, fmt.Errorf("read the lock's holder: %w", err)
	}
	l.setHolder(holder)
	return nil, nil
}

// wait returns after d, or when ctx is done.
func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// warner logs a warning for each new error, and once when errors stop, so
// a retry loop against an unreachable dependency logs a line per change of
// state, not per attempt. Used by one goroutine.
type warner struct {
	log  *slog.Logger
	what string
	last string // the last error logged; "" if none
}

// note logs err if its cause differs from the last one logged, or the
// recovery if err is nil after an error.
func (w *warner) note(err error) {
	switch {
	case err == nil && w.last != "":
		w.log.Info(w.what+": ok again", "after", w.last)
		w.last = ""
	case err != nil && cause(err) != w.last:
		w.last = cause(err)
		w.log.Warn(w.what+" (retrying)", "err", err)
	}
}

// cause is the innermost part of err's text, what changes when the
// failure does: Go's HTTP client reports one refused TLS handshake as
// "remote error: tls: certificate required" or, from its read loop,
// "readLoopPeekFailLocked: remote error: tls: certificate required", and
// a dial with its address and port; neither is a new failure.
func cause(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
