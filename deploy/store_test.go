package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

func newDep(owner, model string, at time.Time) Deployment {
	return Deployment{
		Owner: owner, ModelName: model,
		Config:    Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8, Weights: Weights{Repo: "org/" + model}},
		Settings:  Settings{MinInstances: 0, MaxInstances: 2},
		CreatedAt: at, UpdatedAt: at,
		HFToken: "hf_" + model,
	}
}

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deployments.json")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s, path
}

func mustCreate(t *testing.T, s *Store, d Deployment) Deployment {
	t.Helper()
	got, err := s.Create(d, nil)
	if err != nil {
		t.Fatalf("Create %s: %v", d.FullName(), err)
	}
	return got
}

// changed reports whether a Changed signal is pending, consuming it.
func changed(s *Store) bool {
	select {
	case <-s.Changed():
		return true
	default:
		return false
	}
}

func ids(ds []Deployment) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func TestStoreCRUD(t *testing.T) {
	s, _ := openStore(t)
	if changed(s) {
		t.Fatal("Changed signalled before any change")
	}
	b := mustCreate(t, s, newDep("alice", "b", t0.Add(time.Minute)))
	if !changed(s) {
		t.Error("Create did not signal Changed")
	}
	a := mustCreate(t, s, newDep("alice", "a", t0))
	c := mustCreate(t, s, newDep("bob", "c", t0.Add(2*time.Minute)))
	if a.ID == "" || a.ID == b.ID || b.ID == c.ID {
		t.Fatalf("IDs not assigned uniquely: %q %q %q", a.ID, b.ID, c.ID)
	}

	got, err := s.Get(b.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(b, got); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	got, err = s.ByName("alice", "a")
	if err != nil || got.ID != a.ID {
		t.Errorf("ByName(alice, a) = %s, %v; want %s", got.ID, err, a.ID)
	}
	if _, err := s.ByName("bob", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ByName(bob, a) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("d-nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown error = %v, want ErrNotFound", err)
	}

	if diff := cmp.Diff([]string{a.ID, b.ID}, ids(s.List("alice"))); diff != "" {
		t.Errorf("List(alice), oldest first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{a.ID, b.ID, c.ID}, ids(s.List(""))); diff != "" {
		t.Errorf("List(all) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{}, ids(s.List("carol"))); diff != "" {
		t.Errorf("List(carol) (-want +got):\n%s", diff)
	}

	changed(s)
	upd, err := s.Update(a.ID, func(d *Deployment) {
		d.Settings.MaxInstances = 5
		d.UpdatedAt = t0.Add(time.Hour)
	}, nil)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantA := a
	wantA.Settings.MaxInstances = 5
	wantA.UpdatedAt = t0.Add(time.Hour)
	if diff := cmp.Diff(wantA, upd); diff != "" {
		t.Errorf("Update result (-want +got):\n%s", diff)
	}
	if got, _ := s.Get(a.ID); !cmp.Equal(wantA, got) {
		t.Errorf("Get after Update (-want +got):\n%s", cmp.Diff(wantA, got))
	}
	if !changed(s) {
		t.Error("Update did not signal Changed")
	}
	if _, err := s.Update("d-nope", func(*Deployment) {}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update unknown error = %v, want ErrNotFound", err)
	}

	if err := s.Delete(b.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if !changed(s) {
		t.Error("Delete did not signal Changed")
	}
	if _, err := s.Get(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete error = %v, want ErrNotFound", err)
	}
	if err := s.Delete(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete error = %v, want ErrNotFound", err)
	}
	if diff := cmp.Diff([]string{a.ID, c.ID}, ids(s.List(""))); diff != "" {
		t.Errorf("List after Delete (-want +got):\n%s", diff)
	}
}

func TestStoreChangedCoalesces(t *testing.T) {
	s, _ := openStore(t)
	for _, m := range []string{"a", "b", "c"} {
		mustCreate(t, s, newDep("alice", m, t0))
	}
	if !changed(s) {
		t.Fatal("no Changed signal after three creates")
	}
	if changed(s) {
		t.Error("more than one pending Changed signal; want them coalesced")
	}
}

func TestStoreDuplicateName(t *testing.T) {
	s, _ := openStore(t)
	m := mustCreate(t, s, newDep("alice", "my-Model", t0))
	tests := []struct {
		owner, name string
		want        error // nil: created
	}{
		{"alice", "my-Model", ErrDuplicate},
		{"alice", "my-model", ErrDuplicate},
		{"alice", "MY-MODEL", ErrDuplicate},
		{"alice", "my-model2", nil},
		{"bob", "my-model", nil},
	}
	for _, tt := range tests {
		t.Run(tt.owner+"/"+tt.name, func(t *testing.T) {
			_, err := s.Create(newDep(tt.owner, tt.name, t0), nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create error = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "model_name" {
				t.Fatalf("Create error = %#v, want a *FieldError on model_name", err)
			}
			want := `you already have a deployment named "my-Model" (` + m.ID + `); model names are unique regardless of case`
			if diff := cmp.Diff(want, fe.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
	if got := len(s.List("")); got != 3 {
		t.Errorf("stored %d deployments, want 3", got)
	}
	// Lookups by name stay exact.
	if _, err := s.ByName("alice", "my-model"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ByName(alice, my-model) error = %v, want ErrNotFound (names look up exactly)", err)
	}
}

func TestStoreRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deployments.json")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, newDep("alice", "a", t0))
	// What a crash between creating a temp copy and renaming it leaves,
	// and files of others that only look alike.
	for _, name := range []string{".tmp-deployments.json-123", ".tmp-deployments.json-", ".tmp-other.json-1", "deployments.json.bak"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(`{"hf_token":"hf_secret"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	re, err := OpenStore(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got := len(re.List("")); got != 1 {
		t.Errorf("reopened store lists %d deployments, want 1", got)
	}
	var names []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{".tmp-other.json-1", "deployments.json", "deployments.json.bak"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("data dir after reopen (-want +got):\n%s", diff)
	}
}

func TestWriteFileAtomicFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deployments.json")
	// A directory where the file should be makes the rename fail after
	// the temp copy was written.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("{}"), 0o600); err == nil {
		t.Fatal("writeFileAtomic over a directory succeeded")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the directory (the temp copy removed)", len(entries))
	}
}

func TestStoreCheck(t *testing.T) {
	s, _ := openStore(t)
	a := mustCreate(t, s, newDep("alice", "a", t0))
	mustCreate(t, s, newDep("bob", "b", t0))
	changed(s)

	refuse := errors.New("over quota")
	var seen []string
	_, err := s.Create(newDep("alice", "c", t0), func(others []*Deployment) error {
		for _, o := range others {
			seen = append(seen, o.ModelName)
		}
		return refuse
	})
	if !errors.Is(err, refuse) {
		t.Fatalf("Create error = %v, want the check's", err)
	}
	if diff := cmp.Diff([]string{"a"}, seen); diff != "" {
		t.Errorf("check saw the owner's deployments (-want +got):\n%s", diff)
	}
	if _, err := s.ByName("alice", "c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused create was stored: ByName error = %v", err)
	}
	if changed(s) {
		t.Error("refused create signalled Changed")
	}

	c := mustCreate(t, s, newDep("alice", "c", t0))
	seen = nil
	_, err = s.Update(a.ID, func(d *Deployment) { d.Settings.MinInstances = 2 }, func(d *Deployment, others []*Deployment) error {
		if d.Settings.MinInstances != 2 {
			t.Errorf("check saw min_instances %d, want the updated 2", d.Settings.MinInstances)
		}
		for _, o := range others {
			seen = append(seen, o.ID)
		}
		return refuse
	})
	if !errors.Is(err, refuse) {
		t.Fatalf("Update error = %v, want the check's", err)
	}
	if diff := cmp.Diff([]string{c.ID}, seen); diff != "" {
		t.Errorf("update check saw others (-want +got):\n%s", diff)
	}
	if got, _ := s.Get(a.ID); got.Settings.MinInstances != 0 {
		t.Errorf("refused update was stored: min_instances = %d", got.Settings.MinInstances)
	}
}

func TestStorePersists(t *testing.T) {
	s, path := openStore(t)
	a := mustCreate(t, s, newDep("alice", "a", t0))
	b := mustCreate(t, s, newDep("bob", "b", t0.Add(time.Second)))
	gone := mustCreate(t, s, newDep("bob", "gone", t0))
	if err := s.Delete(gone.ID); err != nil {
		t.Fatal(err)
	}
	a, err := s.Update(a.ID, func(d *Deployment) { d.Settings.MinInstances = 1 }, nil)
	if err != nil {
		t.Fatal(err)
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600 (it holds HF tokens)", perm)
	}

	re, err := OpenStore(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if diff := cmp.Diff([]Deployment{a, b}, re.List("")); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	if got, _ := re.Get(a.ID); !got.CreatedAt.Equal(t0) || got.CreatedAt.Nanosecond() != t0.Nanosecond() {
		t.Errorf("created_at = %v, want %v exactly", got.CreatedAt, t0)
	}
	if _, err := re.Create(newDep("alice", "a", t0), nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate after reopen: error = %v, want ErrDuplicate", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("data dir holds %v, want only the store file (no temp files left)", names)
	}
}

func TestOpenStoreErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(bad); err == nil {
		t.Error("OpenStore of a corrupt file succeeded")
	}
	s, err := OpenStore(filepath.Join(dir, "new", "deployments.json"))
	if err != nil {
		t.Fatalf("OpenStore of a missing file: %v", err)
	}
	if got := s.List(""); len(got) != 0 {
		t.Errorf("new store lists %v", got)
	}
	mustCreate(t, s, newDep("alice", "a", t0)) // creates the directory
}

func TestStoreSaveFailureRollsBack(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(filepath.Join(dir, "sub", "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A file where the directory should be makes every save fail.
	if err := os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(newDep("alice", "a", t0), nil); err == nil {
		t.Fatal("Create succeeded although the file cannot be written")
	}
	if got := s.List(""); len(got) != 0 {
		t.Errorf("failed create left %d deployments in memory", len(got))
	}
	if changed(s) {
		t.Error("failed create signalled Changed")
	}
}
