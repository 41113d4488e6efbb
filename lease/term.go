package lease

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// term runs lead while this replica holds the lock, acquired by a request
// sent at sent. It returns lead's error if lead failed while ctx is live,
// and nil when the term ends otherwise: ctx done, lock lost, lead done.
// The lock is released on every path (a lost one too: Nomad may be back,
// and a release frees it without waiting for its TTL).
func (l *Lease) term(ctx context.Context, sent time.Time, lead func(ctx context.Context) error) error {
	l.setLeader(true, time.Now())
	l.cfg.Logger.Info("lease: acquired", "id", l.cfg.ID, "ttl", l.ttl)
	termCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- lead(termCtx) }()
	lost := make(chan error, 1)
	go func() { lost <- l.keep(termCtx, sent) }()

	select {
	case err := <-done:
		cancel()
		<-lost
		l.setLeader(false, time.Now())
		switch {
		case ctx.Err() != nil:
			l.release(nil)
			return nil
		case err != nil:
			l.release(fmt.Errorf("the leader's work failed: %w", err))
			return err
		}
		l.release(errors.New("the leader's work returned"))
		return nil
	case why := <-lost:
		cancel()
		<-done // its error only echoes the cancellation
		l.setLeader(false, time.Now())
		if why == nil { // keep saw termCtx done before this term cancelled it: ctx is done
			l.release(nil)
			return nil
		}
		l.cfg.Logger.Warn("lease: lost", "id", l.cfg.ID, "why", why)
		l.tryRelease()
		return nil
	}
}

// release frees the lock on a fresh context, bounded, and logs it with
// why the term ended (nil: Run's context is done).
func (l *Lease) release(why error) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := l.cfg.Locker.Release(ctx); err != nil {
		l.cfg.Logger.Warn("lease: release failed; the lock frees itself after its TTL", "id", l.cfg.ID, "err", err)
		return
	}
	if why != nil {
		l.cfg.Logger.Info("lease: released", "id", l.cfg.ID, "why", why)
	} else {
		l.cfg.Logger.Info("lease: released", "id", l.cfg.ID)
	}
}

// tryRelease frees a lock this replica believes lost, in case its owner
// still counts it as this replica's (a renewal lost on the way back). Its
// failure is the expected case and is not logged.
func (l *Lease) tryRelease() {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = l.cfg.Locker.Release(ctx)
}

// keep renews the lock every TTL/4 (Retry after a failure) until ctx is
// done (it returns nil) or the lock is lost: Renew says ErrHeld, or no
// renewal succeeded within TTL of when the last successful Acquire or
// Renew was sent (each Renew is bounded by that deadline, so a hung
// request cannot keep the term alive).
func (l *Lease) keep(ctx context.Context, sent time.Time) error {
	w := warner{log: l.cfg.Logger, what: "lease: renewal failed"}
	next := sent.Add(l.ttl / 4)
	for {
		deadline := sent.Add(l.ttl)
		wait(ctx, time.Until(earliest(next, deadline)))
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return errSilent
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		err := l.cfg.Locker.Renew(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrHeld) {
			return fmt.Errorf("renewal refused: %w", err)
		}
		w.note(err)
		if err == nil {
			sent, next = now, now.Add(l.ttl/4)
		} else {
			next = time.Now().Add(l.cfg.Retry)
		}
	}
}

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
