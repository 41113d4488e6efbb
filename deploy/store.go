package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrNotFound is returned for an unknown deployment (or one owned by someone
// else: callers never learn that another user's deployment exists).
var ErrNotFound = errors.New("deployment not found")

// ErrDuplicate is returned (in a *FieldError on model_name) when the owner
// already has a deployment of that model_name, compared regardless of case:
// "Foo" and "foo" would be two models one typo apart. A SharedBackend
// returns it bare when another store holds the name.
var ErrDuplicate = errors.New("deployment with that model_name already exists")

// ErrConflict is returned when a change raced another store's change to the
// same deployment (another thaw server replica wrote or deleted it since
// this store read it): nothing was written, the store now holds the other
// change, and the caller may read it again and retry.
var ErrConflict = errors.New("deployment changed by another writer meanwhile")

// Backend persists deployment records for one writer. Put and Delete get
// the whole set after the change as well as the one record, so that a
// backend may rewrite everything (one file) or only that record.
type Backend interface {
	Load() ([]Deployment, error)
	Put(all []Deployment, d Deployment) error
	Delete(all []Deployment, id string) error
}

// Store keeps deployments in memory, written through to its backend on every
// change, and serialises changes so that checks (quota, duplicates) and the
// write are atomic. Over a Backend it suits one writer; over a
// SharedBackend (NewSharedStore) several stores, one per thaw server
// replica, write at once: each write names the version it changes, a lost
// race is ErrConflict, and Run follows the others' changes.
type Store struct {
	b     versioned
	watch SharedBackend // nil: nothing to follow
	log   *slog.Logger

	// mu guards byID, ver, tomb and subs, and serialises writes to the
	// backend.
	mu   sync.Mutex
	byID map[string]Deployment
	// ver is the backend's version of each deployment in byID.
	ver map[string]uint64
	// tomb holds the version of each deployment this store deleted, until a
	// watch shows it gone: a snapshot older than the delete must not bring
	// it back.
	tomb map[string]uint64
	// subs are the change signals, one per reader; subs[0] is Changed's.
	subs []chan struct{}

	// misses shares one backend read among concurrent lookups that
	// missed (they wait for the read in flight); lastMiss (guarded by
	// missMu) is when the last read began.
	misses   singleflight.Group
	missMu   sync.Mutex
	lastMiss time.Time
}

// NewStore loads the deployments in b.
func NewStore(b Backend) (*Store, error) { return newStore(plain{b}, nil, nil) }

// NewSharedStore loads the deployments in b, which other stores (other thaw
// server replicas) may write too; Run follows their changes. log (nil:
// slog.Default) gets the watch's failures.
func NewSharedStore(b SharedBackend, log *slog.Logger) (*Store, error) {
	return newStore(shared{b}, b, log)
}

func newStore(b versioned, watch SharedBackend, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{b: b, watch: watch, log: log, byID: map[string]Deployment{}, ver: map[string]uint64{},
		tomb: map[string]uint64{}, subs: []chan struct{}{make(chan struct{}, 1)}}
	recs, err := b.load()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		s.byID[r.Deployment.ID] = r.Deployment
		s.ver[r.Deployment.ID] = r.Version
	}
	return s, nil
}

// OpenStore loads the store kept in the JSON file at path (FileBackend),
// creating an empty one when the file does not exist.
func OpenStore(path string) (*Store, error) { return NewStore(FileBackend{Path: path}) }

// Changed receives a value after any change (coalesced: one pending signal at
// most). It is the store's own subscription, for one reader: the fleet
// reconciles on it. Any other reader takes its own with Subscribe.
func (s *Store) Changed() <-chan struct{} { return s.subs[0] }

// Subscribe returns a new channel that, like Changed, receives a value after
// every change made from now on (coalesced: one pending signal at most). Each
// reader subscribes once, before it starts reading; a signal is never split
// between readers, and a slow reader delays no one. The channel lives as long
// as the store.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

// Create assigns d an ID and stores it. check, when not nil, runs under the
// store's lock with the owner's other deployments, so that quota checks and
// the insert are atomic. A name the owner already has, in any case, is a
// *FieldError wrapping ErrDuplicate.
func (s *Store) Create(d Deployment, check func(others []*Deployment) error) (Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var mine []*Deployment
	for _, o := range s.byID {
		if o.Owner != d.Owner {
			continue
		}
		if strings.EqualFold(o.ModelName, d.ModelName) {
			return Deployment{}, &FieldError{Field: "model_name", Err: ErrDuplicate, Message: fmt.Sprintf(
				"you already have a deployment named %q (%s); model names are unique regardless of case", o.ModelName, o.ID)}
		}
		o := o
		mine = append(mine, &o)
	}
	if check != nil {
		if err := check(mine); err != nil {
			return Deployment{}, err
		}
	}
	d.ID = newID()
	s.byID[d.ID] = d
	v, err := s.b.create(s.allLocked(), d)
	if err != nil {
		delete(s.byID, d.ID)
		if errors.Is(err, ErrDuplicate) {
			return Deployment{}, &FieldError{Field: "model_name", Err: ErrDuplicate, Message: fmt.Sprintf(
				"you already have a deployment named %q; model names are unique regardless of case", d.ModelName)}
		}
		return Deployment{}, err
	}
	s.ver[d.ID] = v
	s.signal()
	return d, nil
}

// Get returns the deployment with id, from memory: it never blocks on the
// backend (the fleet and the publishers call it with their locks held).
func (s *Store) Get(id string) (Deployment, error) {
	return s.find(false, func(d Deployment) bool { return d.ID == id })
}

// ByName returns the owner's deployment called model, from memory.
func (s *Store) ByName(owner, model string) (Deployment, error) {
	return s.find(false, func(d Deployment) bool { return d.Owner == owner && d.ModelName == model })
}

// Fetch is Get for a request from a client: in a shared store a miss reads
// the backend before it answers (syncOnMiss), so a deployment another
// replica created a moment ago is found. It may wait on the backend (up to
// 2 s): call it with no lock held.
func (s *Store) Fetch(id string) (Deployment, error) {
	return s.find(true, func(d Deployment) bool { return d.ID == id })
}

// FetchByName is ByName for a request from a client, as Fetch is Get's.
func (s *Store) FetchByName(owner, model string) (Deployment, error) {
	return s.find(true, func(d Deployment) bool { return d.Owner == owner && d.ModelName == model })
}

// find returns the deployment match accepts; with fetch, it syncs a shared
// store once on a miss.
func (s *Store) find(fetch bool, match func(Deployment) bool) (Deployment, error) {
	lookup := func() (Deployment, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, d := range s.byID {
			if match(d) {
				return d, true
			}
		}
		return Deployment{}, false
	}
	if d, ok := lookup(); ok {
		return d, nil
	}
	if fetch && s.syncOnMiss() {
		if d, ok := lookup(); ok {
			return d, nil
		}
	}
	return Deployment{}, ErrNotFound
}

// List returns the owner's deployments (all when owner is ""), oldest first.
func (s *Store) List(owner string) []Deployment {
	s.mu.Lock()
	out := make([]Deployment, 0, len(s.byID))
	for _, d := range s.byID {
		if owner == "" || d.Owner == owner {
			out = append(out, d)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Update applies fn to the stored deployment with id and saves it. check runs
// under the lock with the owner's other deployments, like Create's.
func (s *Store) Update(id string, fn func(*Deployment), check func(d *Deployment, others []*Deployment) error) (Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.byID[id]
	if !ok {
		return Deployment{}, ErrNotFound
	}
	d := old
	fn(&d)
	if check != nil {
		var mine []*Deployment
		for _, o := range s.byID {
			if o.Owner == d.Owner && o.ID != id {
				o := o
				mine = append(mine, &o)
			}
		}
		if err := check(&d, mine); err != nil {
			return Deployment{}, err
		}
	}
	s.byID[id] = d
	v, err := s.b.update(s.allLocked(), d, s.ver[id])
	if err != nil {
		s.byID[id] = old
		return Deployment{}, s.conflictLocked(id, err)
	}
	s.ver[id] = v
	s.signal()
	return d, nil
}

// Delete removes the deployment with id.
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.byID[id]
	if !ok {
		return ErrNotFound
	}
	delete(s.byID, id)
	if err := s.b.remove(s.allLocked(), old, s.ver[id]); err != nil {
		s.byID[id] = old
		return s.conflictLocked(id, err)
	}
	if s.watch != nil {
		s.tomb[id] = s.ver[id]
	}
	delete(s.ver, id)
	s.signal()
	return nil
}

// conflictLocked returns err, having reloaded the deployment with id when
// err is ErrConflict (another store changed it): ErrNotFound when another
// store deleted it. Called with mu held.
func (s *Store) conflictLocked(id string, err error) error {
	if !errors.Is(err, ErrConflict) {
		return err
	}
	r, rerr := s.b.read(id)
	switch {
	case errors.Is(rerr, ErrNotFound):
		s.dropLocked(id)
		return ErrNotFound
	case rerr != nil:
		// The watch catches up; the caller retries on 409 anyway.
		s.log.Warn("reload a deployment after a conflict", "deploy", id, "err", rerr)
	case r.Version > s.ver[id]:
		s.byID[id], s.ver[id] = r.Deployment, r.Version
		s.signal()
	}
	return fmt.Errorf("change deployment %s: %w", id, err)
}

// dropLocked forgets the deployment with id, which another store deleted,
// signalling if it was known. Called with mu held.
func (s *Store) dropLocked(id string) {
	if _, ok := s.byID[id]; !ok {
		return
	}
	delete(s.byID, id)
	delete(s.ver, id)
	s.signal()
}

// allLocked returns every deployment, by ID. Called with mu held.
func (s *Store) allLocked() []Deployment {
	all := make([]Deployment, 0, len(s.byID))
	for _, d := range s.byID {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all
}

// signal tells every subscriber that something changed. Called with mu held.
func (s *Store) signal() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "d-" + hex.EncodeToString(b[:])
}
