package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/lease"
	"github.com/thawhq/thaw/nomad"
	"github.com/thawhq/thaw/test/e2e"
)

// errKilled is what a killed replica's Locker answers: its process is gone.
var errKilled = errors.New("replica killed")

// killable is a replica's Locker that can be killed like its process
// (SIGKILL): from then on every call fails and nothing reaches Nomad, so
// the lock is neither renewed nor released. It records when the last
// successful renewal was sent.
type killable struct {
	lease.Locker
	mu      sync.Mutex // mu guards killed and renewed.
	killed  bool
	renewed time.Time
}

func (k *killable) kill() (lastRenewal time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.killed = true
	return k.renewed
}

func (k *killable) dead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}

func (k *killable) Acquire(ctx context.Context) error {
	if k.dead() {
		return errKilled
	}
	sent := time.Now()
	err := k.Locker.Acquire(ctx)
	if err == nil {
		k.mu.Lock()
		k.renewed = sent
		k.mu.Unlock()
	}
	return err
}

func (k *killable) Renew(ctx context.Context) error {
	if k.dead() {
		return errKilled
	}
	sent := time.Now()
	err := k.Locker.Renew(ctx)
	if err == nil {
		k.mu.Lock()
		k.renewed = sent
		k.mu.Unlock()
	}
	return err
}

func (k *killable) Release(ctx context.Context) error {
	if k.dead() {
		return errKilled
	}
	return k.Locker.Release(ctx)
}

func (k *killable) Holder(ctx context.Context) (string, error) {
	if k.dead() {
		return "", errKilled
	}
	return k.Locker.Holder(ctx)
}

// candidate is one replica's Lease running against the test agent.
type candidate struct {
	id     string
	l      *lease.Lease
	lock   *killable
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned err
	err    error
}

// election runs candidates on one lock path and watches them: every
// 100ms it records each one's Status, and fails the test if two lead at
// once (by Status, or by their terms running).
type election struct {
	t      *testing.T
	client *api.Client
	path   string

	mu      sync.Mutex // mu guards cands and leading.
	cands   []*candidate
	leading map[string]bool // whose terms run
}

// newElection watches candidates on the lock path, which admin (if not
// nil) deletes when the test ends.
func newElection(t *testing.T, client, admin *api.Client, path string) *election {
	e := &election{t: t, client: client, path: path, leading: map[string]bool{}}
	if admin != nil {
		t.Cleanup(func() {
			if _, err := admin.Variables().Delete(path, nil); err != nil {
				t.Errorf("delete %s: %v", path, err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		e.watch(ctx)
	}()
	t.Cleanup(func() { cancel(); <-watched })
	return e
}

func (e *election) start(id string) *candidate {
	t := e.t
	t.Helper()
	lock, err := nomad.NewLock(e.client, nomad.LockConfig{Path: e.path, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{id: id, lock: &killable{Locker: lock}, done: make(chan struct{})}
	logs := &e2e.Buffer{}
	c.l, err = lease.New(lease.Config{Locker: c.lock, ID: id, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		c.err = c.l.Run(ctx, e.lead(id))
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
		if t.Failed() {
			t.Logf("%s's log:\n%s", id, logs.String())
		}
	})
	e.mu.Lock()
	e.cands = append(e.cands, c)
	e.mu.Unlock()
	return c
}

// lead is id's term: it runs until its context ends.
func (e *election) lead(id string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		e.mu.Lock()
		for other, on := range e.leading {
			if on {
				e.t.Errorf("%s's term starts while %s's runs", id, other)
			}
		}
		e.leading[id] = true
		e.mu.Unlock()
		<-ctx.Done()
		e.mu.Lock()
		e.leading[id] = false
		e.mu.Unlock()
		return nil
	}
}

func (e *election) watch(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if leaders := e.leaders(); len(leaders) > 1 {
			e.t.Errorf("%s all say they lead", strings.Join(leaders, " and "))
		}
	}
}

// leaders returns the candidates whose Status says they lead.
func (e *election) leaders() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for _, c := range e.cands {
		if c.l.Status().Leader {
			ids = append(ids, c.id)
		}
	}
	return ids
}

// waitLeader waits up to timeout for a candidate among of to lead, and
// returns it and when it was seen leading.
func (e *election) waitLeader(timeout time.Duration, of ...*candidate) (*candidate, time.Time) {
	e.t.Helper()
	var got *candidate
	if !waitFor(timeout, 10*time.Millisecond, func() bool {
		for _, c := range of {
			if c.l.Status().Leader {
				got = c
				return true
			}
		}
		return false
	}) {
		e.t.Fatalf("no leader among %d candidates within %v", len(of), timeout)
	}
	return got, time.Now()
}

// TestLeaseFailover: two replicas elect one leader on Nomad's Variables
// lock; the other names it. A graceful stop hands over within the
// follower's Retry (1s) plus a round trip. A leader killed (no renewal, no
// release) stops believing it leads TTL after its last renewal was sent,
// and the other leads once Nomad frees the lock, 2*TTL+delay after that
// renewal; never both at once.
func TestLeaseFailover(t *testing.T) {
	needCluster(t)
	e := newElection(t, nomadClient(), nomadClient(), "thaw/test-leader-"+uniqueName("lease"))
	a, b := e.start("a"), e.start("b")
	first, _ := e.waitLeader(10*time.Second, a, b)
	other := map[*candidate]*candidate{a: b, b: a}[first]
	// At a random point of the follower's Retry period, not in phase with
	// it (both started together).
	time.Sleep(3*time.Second + time.Duration(rand.Int64N(int64(time.Second))))
	if st := other.l.Status(); st.Leader || st.Holder != first.id {
		t.Errorf("%s's status while %s leads: %+v", other.id, first.id, st)
	}

	stopped := time.Now()
	first.cancel()
	<-first.done
	if first.err != nil {
		t.Errorf("%s's Run after a graceful stop: %v", first.id, first.err)
	}
	_, led := e.waitLeader(5*time.Second, other)
	handover := led.Sub(stopped)
	t.Logf("graceful handover: %s led %.2fs after %s's stop began (within its Retry, 1s)", other.id, handover.Seconds(), first.id)
	if handover > 2*time.Second {
		t.Errorf("graceful handover took %v, want within 2s", handover)
	}

	c := e.start("c") // the stopped replica, back as a follower
	time.Sleep(2 * time.Second)
	if st := c.l.Status(); st.Leader || st.Holder != other.id {
		t.Errorf("c's status while %s leads: %+v", other.id, st)
	}
	killed := time.Now()
	lastRenewal := other.lock.kill()
	var believed time.Time
	waitFor(nomad.DefaultLockTTL+time.Second, 10*time.Millisecond, func() bool { return !other.l.Status().Leader })
	believed = time.Now()
	if got := believed.Sub(lastRenewal); got > nomad.DefaultLockTTL+200*time.Millisecond {
		t.Errorf("killed %s believed it led %v after its last renewal, want within TTL", other.id, got)
	}
	bound := 2*nomad.DefaultLockTTL + nomad.DefaultLockDelay + 2*time.Second
	_, led = e.waitLeader(bound, c)
	t.Logf("failover after a kill: c led %.2fs after the kill, %.2fs after %s's last renewal (stopped believing it led %.2fs after it); bound 2*TTL+delay+2s = %v",
		led.Sub(killed).Seconds(), led.Sub(lastRenewal).Seconds(), other.id, believed.Sub(lastRenewal).Seconds(), bound)
	if got := led.Sub(lastRenewal); got < 2*nomad.DefaultLockTTL {
		t.Errorf("c led %v after the dead leader's last renewal: Nomad freed the lock before 2*TTL", got)
	}
}

// readmePolicy returns the ACL policy README.md documents for thaw's
// token: the hcl block after "**ACL policy**".
func readmePolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "**ACL policy**")
	if ok {
		_, rest, ok = strings.Cut(rest, "```hcl\n")
	}
	policy, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal("README.md has no ```hcl block after **ACL policy**")
	}
	return policy
}

// TestLeaseACL: with ACLs enabled, a token holding only the README's
// policy runs the leader election on nomad.DefaultLockPath (acquire,
// holder, renew, release, and a Lease leading); the policy's grant on the
// lock is what lets it (without it, Nomad refuses and Lock says which
// grant is missing). It also finds the least capabilities the lock needs.
func TestLeaseACL(t *testing.T) {
	agent, mgmt := startACLAgent(t, h100+":1")
	client := func(policyName, policy string) *api.Client {
		c, err := api.NewClient(&api.Config{Address: agent.URL, SecretID: aclToken(t, mgmt, policyName, policy)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	policy := readmePolicy(t)
	if !strings.Contains(policy, `path "`+nomad.DefaultLockPath+`"`) {
		t.Fatalf("the README's policy has no grant on %s:\n%s", nomad.DefaultLockPath, policy)
	}

	t.Run("README policy", func(t *testing.T) {
		c := client("thaw-lease", policy)
		lockOps(t, c, "")
		e := newElection(t, c, nil, nomad.DefaultLockPath)
		e.waitLeader(10*time.Second, e.start("a"))
	})

	// Each capability set against what the lock's operations need.
	for _, tc := range []struct {
		caps string
		fail string // the first operation refused; "" for none
	}{
		{`"read", "write"`, ""},
		{`"write"`, "Holder"},
		{`"read"`, "Acquire"},
		{`"list", "read"`, "Acquire"},
	} {
		t.Run("capabilities "+tc.caps, func(t *testing.T) {
			p := fmt.Sprintf("namespace \"default\" {\n  variables {\n    path %q {\n      capabilities = [%s]\n    }\n  }\n}\n", nomad.DefaultLockPath, tc.caps)
			lockOps(t, client("lease-"+uniqueName("caps"), p), tc.fail)
		})
	}
}

// lockOps runs each of the lock's operations on nomad.DefaultLockPath with
// c: all succeed, or the first refused is fail and says what it needs.
func lockOps(t *testing.T, c *api.Client, fail string) {
	t.Helper()
	lock, err := nomad.NewLock(c, nomad.LockConfig{ID: "acl"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	holder := func(ctx context.Context) error {
		h, err := lock.Holder(ctx)
		if err == nil && h != "acl" {
			return fmt.Errorf("Holder %q while this lock holds it", h)
		}
		return err
	}
	ops := []struct {
		name string
		do   func(context.Context) error
	}{{"Acquire", lock.Acquire}, {"Holder", holder}, {"Renew", lock.Renew}, {"Release", lock.Release}}
	for _, op := range ops {
		err := op.do(ctx)
		var pe *nomad.PermissionError
		switch {
		case op.name == fail && errors.As(err, &pe):
			t.Logf("%s refused: %v", op.name, err)
			_ = lock.Release(ctx)
			return
		case op.name == fail:
			t.Fatalf("%s: %v, want a PermissionError", op.name, err)
		case err != nil:
			t.Fatalf("%s: %v", op.name, err)
		}
	}
	if fail != "" {
		t.Errorf("every operation succeeded, want %s refused", fail)
	}
}
