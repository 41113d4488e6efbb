package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// ErrNotFound is returned for an unknown deployment (or one owned by someone
// else: callers never learn that another user's deployment exists).
var ErrNotFound = errors.New("deployment not found")

// ErrDuplicate is returned (in a *FieldError on model_name) when the owner
// already has a deployment of that model_name, compared regardless of case:
// "Foo" and "foo" would be two models one typo apart.
var ErrDuplicate = errors.New("deployment with that model_name already exists")

// Backend persists deployment records. Put and Delete get the whole set
// after the change as well as the one record, so that a backend may rewrite
// everything (one file) or only that record (one Nomad Variable each).
type Backend interface {
	Load() ([]Deployment, error)
	Put(all []Deployment, d Deployment) error
	Delete(all []Deployment, id string) error
}

// Store keeps deployments in memory, written through to a Backend on every
// change, and serialises changes so that checks (quota, duplicates) and the
// write are atomic. It suits one writer per backend.
type Store struct {
	backend Backend

	// mu guards byID and subs, and serialises writes to the backend.
	mu   sync.Mutex
	byID map[string]Deployment
	// subs are the change signals, one per reader; subs[0] is Changed's.
	subs []chan struct{}
}

// NewStore loads the deployments in b.
func NewStore(b Backend) (*Store, error) {
	s := &Store{backend: b, byID: map[string]Deployment{}, subs: []chan struct{}{make(chan struct{}, 1)}}
	ds, err := b.Load()
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		s.byID[d.ID] = d
	}
	return s, nil
}

// OpenStore loads the store kept in the JSON file at path (FileBackend),
// creating an empty one when the file does not exist.
func OpenStore(path string) (*Store, error) { return NewStore(FileBackend{Path: path}) }

// FileBackend keeps all deployments in one JSON file, rewritten atomically
// (temp file + rename, then a sync of the directory) on every change, so that
// a crash leaves either the old or the new file. The file and its temp copies
// are mode 0600: records hold HF tokens. It assumes one writer: Load removes
// the temp copies a crash left behind.
type FileBackend struct{ Path string }

type storeFile struct {
	Version     int          `json:"version"`
	Deployments []Deployment `json:"deployments"`
}

// Load removes the temp copies a crashed writer left next to the file, then
// reads the file; a missing file is an empty store.
func (f FileBackend) Load() ([]Deployment, error) {
	if err := removeTemps(f.Path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	var sf storeFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("parse deployments %s: %w", f.Path, err)
	}
	return sf.Deployments, nil
}

// Put rewrites the file with all.
func (f FileBackend) Put(all []Deployment, _ Deployment) error { return f.save(all) }

// Delete rewrites the file with all.
func (f FileBackend) Delete(all []Deployment, _ string) error { return f.save(all) }

func (f FileBackend) save(all []Deployment) error {
	b, err := json.MarshalIndent(storeFile{Version: 1, Deployments: all}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode deployments: %w", err)
	}
	if err := writeFileAtomic(f.Path, b, 0o600); err != nil {
		return fmt.Errorf("save deployments: %w", err)
	}
	return nil
}

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
	if err := s.backend.Put(s.allLocked(), d); err != nil {
		delete(s.byID, d.ID)
		return Deployment{}, err
	}
	s.signal()
	return d, nil
}

// Get returns the deployment with id.
func (s *Store) Get(id string) (Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.byID[id]
	if !ok {
		return Deployment{}, ErrNotFound
	}
	return d, nil
}

// ByName returns the owner's deployment called model.
func (s *Store) ByName(owner, model string) (Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.byID {
		if d.Owner == owner && d.ModelName == model {
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
	if err := s.backend.Put(s.allLocked(), d); err != nil {
		s.byID[id] = old
		return Deployment{}, err
	}
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
	if err := s.backend.Delete(s.allLocked(), id); err != nil {
		s.byID[id] = old
		return err
	}
	s.signal()
	return nil
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

// tempPrefix is the name prefix of path's temp copies.
func tempPrefix(path string) string { return ".tmp-" + filepath.Base(path) + "-" }

// removeTemps removes the temp copies of path that writeFileAtomic left
// when the process died between creating one and renaming or removing it.
func removeTemps(path string) error {
	ents, err := os.ReadDir(filepath.Dir(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list deployments dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), tempPrefix(path)) {
			if err := os.Remove(filepath.Join(filepath.Dir(path), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove stale temp copies of the deployments (they hold HF tokens): %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a synced temp file (created
// 0600 by os.CreateTemp, then set to perm) and a rename, then syncs the
// directory so that the rename survives a crash.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the entries of dir (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "d-" + hex.EncodeToString(b[:])
}
