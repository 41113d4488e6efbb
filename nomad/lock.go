package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/lease"
)

// Defaults of LockConfig.
const (
	// DefaultLockPath is the Variable the replicas of one control plane
	// elect their leader on.
	DefaultLockPath = "thaw/leader"
	// DefaultLockTTL is Nomad's minimum lock TTL: it answers 400 "TTL
	// must be between 10 seconds and 24 hours" to less. A leader that
	// dies is replaced about 2 x TTL + LockDelay later (measured on
	// Nomad 1.10.5: 20.1s).
	DefaultLockTTL = 10 * time.Second
	// DefaultLockDelay is the smallest delay Nomad takes as given (0
	// means its own default, 15s). A longer one only delays failover:
	// safety comes from the lease, whose leader stops TTL after its
	// last renewal was sent, TTL before Nomad frees the lock.
	DefaultLockDelay = time.Millisecond
)

// holderItem is the lock Variable's item that names the holder.
const holderItem = "holder"

// LockConfig configures a Lock.
type LockConfig struct {
	// Path is the lock's Variable. Default DefaultLockPath.
	Path string
	// ID names this replica: the lock Variable's "holder" item while it
	// holds the lock. Required.
	ID string
	// TTL is how long a hold lasts without renewal: Nomad frees the lock
	// 2 x TTL after the last renewal it saw (plus Delay). At least 10s
	// (Nomad's minimum), at most 24h. Default DefaultLockTTL.
	TTL time.Duration
	// Delay is how long Nomad keeps an expired lock from being
	// acquired again. Default DefaultLockDelay.
	Delay time.Duration
	// Namespace of the Variable. Default: the client's.
	Namespace string
	// StateFile, when set, keeps Nomad's ID of this replica's hold across
	// restarts (thaw server: <data-dir>/leader-lock, mode 0600: the ID
	// lets one renew or release the lock). A replica restarted after a
	// crash then resumes its own hold at once, where it would wait 2 x
	// TTL for Nomad to free it. Two live processes must never share one.
	// Written best effort: a failed write only loses the shortcut.
	StateFile string
}

// Lock is a lease.Locker on Nomad's Variables lock: one Lock per replica,
// the replicas sharing its Path. Nomad answers 409 to an Acquire while
// another holds it and to a Renew or Release by a former holder; Lock
// returns those as lease.ErrHeld, and a 403 as a *PermissionError. Safe
// for concurrent use.
type Lock struct {
	c   *api.Client
	cfg LockConfig

	mu     sync.Mutex // mu guards lockID.
	lockID string     // Nomad's ID of this replica's hold; "" if none
}

// NewLock returns a Lock on c; it makes no request.
func NewLock(c *api.Client, cfg LockConfig) (*Lock, error) {
	if c == nil || cfg.ID == "" {
		return nil, errors.New("nomad lock: a client and an ID are required")
	}
	if cfg.Path == "" {
		cfg.Path = DefaultLockPath
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultLockTTL
	}
	if cfg.TTL < 10*time.Second || cfg.TTL > 24*time.Hour {
		return nil, fmt.Errorf("nomad lock: TTL %v: Nomad takes 10s to 24h", cfg.TTL)
	}
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("nomad lock: delay %v is negative", cfg.Delay)
	}
	if cfg.Delay == 0 {
		cfg.Delay = DefaultLockDelay
	}
	l := &Lock{c: c, cfg: cfg}
	if cfg.StateFile != "" {
		if b, err := os.ReadFile(cfg.StateFile); err == nil {
			l.lockID = strings.TrimSpace(string(b))
		}
	}
	return l, nil
}

// TTL returns the lock's TTL.
func (l *Lock) TTL() time.Duration { return l.cfg.TTL }

// Acquire takes the lock, writing this replica's ID in the Variable. A
// hold this replica still has the ID of (its term ended when renewals
// failed for a TTL, Nomad being unreachable, and the release failed too;
// or, with a StateFile, the process was killed while it led) is renewed
// if Nomad still counts it as this replica's: Nomad frees it only 2 x TTL
// after its last renewal, and until then no replica could take it.
func (l *Lock) Acquire(ctx context.Context) error {
	if l.id() != "" {
		err := l.Renew(ctx)
		if !errors.Is(err, lease.ErrHeld) {
			return err // renewed (nil), or Nomad is still unreachable
		}
	}
	v := &api.Variable{Namespace: l.cfg.Namespace, Path: l.cfg.Path,
		Items: api.VariableItems{holderItem: l.cfg.ID},
		Lock:  &api.VariableLock{TTL: l.cfg.TTL.String(), LockDelay: l.cfg.Delay.String()}}
	out, _, err := l.c.Variables().AcquireLock(v, l.w(ctx))
	if err != nil {
		return l.fail("acquire", "write", err)
	}
	if out == nil || out.Lock == nil || out.Lock.ID == "" {
		return fmt.Errorf("acquire lock %s: Nomad's answer has no lock ID", l.cfg.Path)
	}
	l.setID(out.Lock.ID)
	return nil
}

// Renew extends this replica's hold; lease.ErrHeld if it holds none.
func (l *Lock) Renew(ctx context.Context) error {
	id := l.id()
	if id == "" {
		return fmt.Errorf("renew lock %s: not acquired: %w", l.cfg.Path, lease.ErrHeld)
	}
	v := &api.Variable{Namespace: l.cfg.Namespace, Path: l.cfg.Path, Lock: &api.VariableLock{ID: id}}
	if _, _, err := l.c.Variables().RenewLock(v, l.w(ctx)); err != nil {
		return l.fail("renew", "write", err)
	}
	return nil
}

// Release frees the lock if this replica holds it: at once, with no lock
// delay. Releasing a lock Nomad already freed is no error; one another
// replica holds is lease.ErrHeld.
func (l *Lock) Release(ctx context.Context) error {
	id := l.id()
	if id == "" {
		return nil
	}
	v := &api.Variable{Namespace: l.cfg.Namespace, Path: l.cfg.Path, Lock: &api.VariableLock{ID: id}}
	_, _, err := l.c.Variables().ReleaseLock(v, l.w(ctx))
	if err != nil && notLocked(err) {
		err = nil
	}
	if err != nil {
		return l.fail("release", "write", err)
	}
	l.setID("")
	return nil
}

// Holder returns the ID in the lock Variable: the replica that acquired
// the lock last, which holds it when Acquire has just found it held; ""
// if the lock was never taken. It cannot say whether the lock is still
// held: Nomad shows a Variable's lock (its ID, which lets one renew or
// release it) to management tokens only.
func (l *Lock) Holder(ctx context.Context) (string, error) {
	v, _, err := l.c.Variables().Peek(l.cfg.Path, (&api.QueryOptions{Namespace: l.cfg.Namespace}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("read lock %s: %w", l.cfg.Path, denied(err, needVariable("read", l.cfg.Path)))
	}
	if v == nil {
		return "", nil
	}
	return v.Items[holderItem], nil
}

// fail wraps the error of the lock operation op: Nomad's 409 (held by
// another) and 404 (the Variable was deleted, to a Renew) as lease.ErrHeld,
// this replica's hold being gone; its 403 as a *PermissionError needing
// the variables capability need.
func (l *Lock) fail(op, need string, err error) error {
	if s := statusOf(err); s == http.StatusConflict || s == http.StatusNotFound {
		l.setID("")
		return fmt.Errorf("%s lock %s: %w (Nomad: %w)", op, l.cfg.Path, lease.ErrHeld, err)
	}
	return fmt.Errorf("%s lock %s: %w", op, l.cfg.Path, denied(err, needVariable(need, l.cfg.Path)))
}

// notLocked says err is Nomad's answer to releasing a Variable that holds
// no lock (its TTL ran out) or is gone: 500 "variable doesn't hold a lock"
// or "variable doesn't exist" on Nomad 1.10.5.
func notLocked(err error) bool {
	var ue api.UnexpectedResponseError
	if !errors.As(err, &ue) || ue.StatusCode() != http.StatusInternalServerError {
		return false
	}
	return strings.Contains(ue.Body(), "doesn't hold a lock") || strings.Contains(ue.Body(), "doesn't exist")
}

func (l *Lock) w(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: l.cfg.Namespace}).WithContext(ctx)
}

func (l *Lock) id() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lockID
}

func (l *Lock) setID(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id == l.lockID {
		return
	}
	l.lockID = id
	if l.cfg.StateFile != "" {
		l.saveLocked()
	}
}

// saveLocked writes lockID to the state file (removes it for none),
// atomically. Called with mu held.
func (l *Lock) saveLocked() {
	if l.lockID == "" {
		_ = os.Remove(l.cfg.StateFile)
		return
	}
	tmp := l.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(l.lockID+"\n"), 0o600); err != nil {
		return
	}
	_ = os.Rename(tmp, l.cfg.StateFile)
}
