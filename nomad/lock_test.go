package nomad

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/lease"
)

// fakeLocks serves Nomad's Variables lock API (PUT /v1/var/<path>?lock-
// acquire|lock-renew|lock-release, GET /v1/var/<path>) from memory, with
// the answers Nomad 1.10.5 gives to a client token: a GET without the
// Variable's lock; 409 to an Acquire of a held lock and to a
// Renew or Release with another lock ID; 500 "variable doesn't hold a
// lock" to a Release of a free one, 404 "variable doesn't exist" to a
// Renew of a missing Variable. Locks never expire here.
type fakeLocks struct {
	mu   sync.Mutex // mu guards vars, n and got.
	vars map[string]*api.Variable
	n    int
	got  []api.Variable // the lock requests' bodies
	deny bool           // answer 403 to everything
}

func (f *fakeLocks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deny {
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1/var/")
	cur := f.vars[path]
	if r.Method == http.MethodGet {
		if cur == nil {
			http.Error(w, "variable not found", http.StatusNotFound)
			return
		}
		shown := *cur
		shown.Lock = nil // Nomad shows the lock to management tokens only
		_ = json.NewEncoder(w).Encode(shown)
		return
	}
	var in api.Variable
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sent := in
	if in.Lock != nil {
		lock := *in.Lock
		sent.Lock = &lock
	}
	f.got = append(f.got, sent)
	op := ""
	for _, o := range []string{"lock-acquire", "lock-renew", "lock-release"} {
		if r.URL.Query().Has(o) {
			op = o
		}
	}
	status, out := f.lockOp(op, path, cur, in)
	w.WriteHeader(status)
	_, _ = fmt.Fprint(w, out)
}

// lockOp applies one lock operation; it returns the status and body.
// Called with mu held.
func (f *fakeLocks) lockOp(op, path string, cur *api.Variable, in api.Variable) (int, string) {
	held := cur != nil && cur.Lock != nil
	mine := held && in.Lock != nil && in.Lock.ID == cur.Lock.ID
	switch {
	case op == "lock-acquire" && held, op != "lock-acquire" && held && !mine:
		return http.StatusConflict, `{"Path":"` + path + `"}`
	case op == "lock-release" && cur == nil:
		return http.StatusInternalServerError, "variable doesn't exist"
	case op == "lock-release" && !held:
		return http.StatusInternalServerError, "variable doesn't hold a lock"
	case op == "lock-renew" && cur == nil:
		return http.StatusNotFound, "variable doesn't exist"
	case op == "lock-renew" && !held:
		return http.StatusConflict, "variable doesn't hold a lock"
	case op == "lock-acquire":
		f.n++
		in.Path, in.Lock.ID = path, fmt.Sprintf("lock-%d", f.n)
		f.vars[path] = &in
		b, _ := json.Marshal(in)
		return http.StatusOK, string(b)
	case op == "lock-release":
		cur.Lock = nil
	case op == "":
		return http.StatusBadRequest, "not a lock operation"
	}
	b, _ := json.Marshal(cur)
	return http.StatusOK, string(b)
}

func newFakeLocks(t *testing.T) (*fakeLocks, *api.Client) {
	t.Helper()
	f := &fakeLocks{vars: map[string]*api.Variable{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func newTestLock(t *testing.T, c *api.Client, id string) *Lock {
	t.Helper()
	l, err := NewLock(c, LockConfig{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNewLockConfig(t *testing.T) {
	_, c := newFakeLocks(t)
	l := newTestLock(t, c, "a")
	want := LockConfig{Path: "thaw/leader", ID: "a", TTL: 10 * time.Second, Delay: time.Millisecond}
	if diff := cmp.Diff(want, l.cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	for _, bad := range []LockConfig{{}, {ID: "a", TTL: 5 * time.Second}, {ID: "a", TTL: 25 * time.Hour}, {ID: "a", Delay: -1}} {
		if _, err := NewLock(c, bad); err == nil {
			t.Errorf("NewLock accepted %+v", bad)
		}
	}
}

// TestLockTwoReplicas: what each replica sees of one lock through its
// life: acquired, refused to the other, named by Holder, renewed,
// released, taken by the other, and the first's renewal refused.
func TestLockTwoReplicas(t *testing.T) {
	f, c := newFakeLocks(t)
	a, b := newTestLock(t, c, "a"), newTestLock(t, c, "b")
	ctx := context.Background()
	holder := func() string {
		t.Helper()
		h, err := b.Holder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := holder(); h != "" {
		t.Fatalf("Holder of a lock never taken: %q", h)
	}
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b's Acquire of a's lock: %v, want ErrHeld", err)
	}
	if h := holder(); h != "a" {
		t.Errorf("Holder %q, want a", h)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Renew(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("b's Renew without a hold: %v, want ErrHeld", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h := holder(); h != "a" {
		t.Errorf("Holder %q after the release, want a (the last to acquire it)", h)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("a second Release: %v, want none", err)
	}
	if err := b.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if h := holder(); h != "b" {
		t.Errorf("Holder %q, want b", h)
	}
	f.mu.Lock()
	first := f.got[0]
	f.mu.Unlock()
	wantLock := &api.VariableLock{TTL: "10s", LockDelay: "1ms"}
	if diff := cmp.Diff(wantLock, first.Lock); first.Items["holder"] != "a" || diff != "" {
		t.Errorf("a's Acquire sent items %v, lock (-want +got):\n%s", first.Items, diff)
	}
}

// TestLockLost: a Renew or Release after the lock went to another replica
// (a's TTL ran out) is ErrHeld; a Release after it simply expired, or
// after the Variable was deleted, is no error; a Renew then is ErrHeld.
func TestLockLost(t *testing.T) {
	f, c := newFakeLocks(t)
	ctx := context.Background()
	a := newTestLock(t, c, "a")
	expire := func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.vars["thaw/leader"].Lock = nil
	}
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	expire()
	if err := newTestLock(t, c, "b").Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("Renew of a lock b took: %v, want ErrHeld", err)
	}

	for _, gone := range []string{"expired", "deleted"} {
		for _, op := range []string{"Release", "Renew"} {
			a := newTestLock(t, c, "a")
			f.mu.Lock()
			delete(f.vars, "thaw/leader")
			f.mu.Unlock()
			if err := a.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
			expire()
			if gone == "deleted" {
				f.mu.Lock()
				delete(f.vars, "thaw/leader")
				f.mu.Unlock()
			}
			if op == "Release" {
				if err := a.Release(ctx); err != nil {
					t.Errorf("%s: Release: %v, want none", gone, err)
				}
			} else if err := a.Renew(ctx); !errors.Is(err, lease.ErrHeld) {
				t.Errorf("%s: Renew: %v, want ErrHeld", gone, err)
			}
		}
	}
}

// TestLockReacquireOwnHold: a replica whose term ended while Nomad was
// unreachable (no renewal, no release got through) and that campaigns
// again gets its own hold back by renewing it, if Nomad still counts it
// as its own, instead of waiting for Nomad to free it; once another holds
// the lock, it is refused as any campaigner is, and then campaigns by
// Acquire alone.
func TestLockReacquireOwnHold(t *testing.T) {
	f, c := newFakeLocks(t)
	ctx := context.Background()
	a, b := newTestLock(t, c, "a"), newTestLock(t, c, "b")
	sent := func() (renews, acquires int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range f.got {
			if v.Lock != nil && v.Lock.ID != "" {
				renews++
			} else {
				acquires++
			}
		}
		f.got = nil
		return renews, acquires
	}
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	sent()
	f.mu.Lock()
	f.deny = true // Nomad answers, but not with the lock's state
	f.mu.Unlock()
	if err := a.Acquire(ctx); err == nil || errors.Is(err, lease.ErrHeld) {
		t.Fatalf("campaign while Nomad fails: %v, want its error, not ErrHeld", err)
	}
	f.mu.Lock()
	f.deny = false
	f.mu.Unlock()
	sent()
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("campaign for a hold Nomad still counts as a's: %v", err)
	}
	if r, q := sent(); r != 1 || q != 0 {
		t.Errorf("a's campaign sent %d renewals and %d acquires, want its hold renewed", r, q)
	}
	if err := b.Acquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("b's Acquire of the lock a got back: %v, want ErrHeld", err)
	}

	f.mu.Lock()
	f.vars["thaw/leader"].Lock = nil // a's TTL ran out
	f.mu.Unlock()
	if err := b.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	sent()
	if err := a.Acquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("a's campaign for the lock b took: %v, want ErrHeld", err)
	}
	if r, q := sent(); r != 1 || q != 1 {
		t.Errorf("a's campaign after its hold was gone sent %d renewals and %d acquires, want 1 and 1", r, q)
	}
	if err := a.Acquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("a's next campaign: %v, want ErrHeld", err)
	}
	if r, q := sent(); r != 0 || q != 1 {
		t.Errorf("a's next campaign sent %d renewals and %d acquires, want an acquire alone", r, q)
	}
}

// TestLockDenied: Nomad's 403 says which grant the token lacks.
func TestLockDenied(t *testing.T) {
	f, c := newFakeLocks(t)
	f.deny = true
	l := newTestLock(t, c, "a")
	ctx := context.Background()
	_, herr := l.Holder(ctx)
	for _, tc := range []struct {
		err  error
		need string
	}{
		{l.Acquire(ctx), `variables capability "write" on thaw/leader`},
		{herr, `variables capability "read" on thaw/leader`},
	} {
		var pe *PermissionError
		if !errors.As(tc.err, &pe) || pe.Need != tc.need {
			t.Errorf("error %v, want a PermissionError needing %s", tc.err, tc.need)
		}
	}
}

// TestLockStateFileResumes: a replica killed while it led, restarted with
// the same state file, resumes its hold at once by renewing it (no
// acquire, no wait for Nomad to free it); after a release the file is gone
// and a restart campaigns afresh; another replica cannot take the hold
// meanwhile.
func TestLockStateFileResumes(t *testing.T) {
	f, c := newFakeLocks(t)
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "leader-lock")
	open := func(id string) *Lock {
		l, err := NewLock(c, LockConfig{ID: id, StateFile: state})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := open("a-1")
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(state); err != nil || len(b) == 0 {
		t.Fatalf("state file after an acquire: %q, %v", b, err)
	}
	// a is SIGKILLed: no release. Its restart reads the file.
	f.mu.Lock()
	f.got = nil
	f.mu.Unlock()
	restarted := open("a-2")
	if err := restarted.Acquire(ctx); err != nil {
		t.Fatalf("the restarted replica's campaign: %v, want its hold resumed", err)
	}
	f.mu.Lock()
	got := f.got
	f.mu.Unlock()
	if len(got) != 1 || got[0].Lock == nil || got[0].Lock.ID == "" {
		t.Errorf("the restart sent %+v, want one renewal of the old hold", got)
	}
	other := newTestLock(t, c, "b")
	if err := other.Acquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("another replica's Acquire: %v, want ErrHeld", err)
	}
	if err := restarted.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file after a release: %v, want it gone", err)
	}
}
