package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

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
