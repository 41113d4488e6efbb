package localrt

import (
	"errors"
	"os"
	"path/filepath"
)

// instancesDirName is the directory below Config.StateDir that holds the
// instances' own directories.
const instancesDirName = "instances"

// openInstancesRoot returns the directory holding the instances' own
// directories: <stateDir>/instances, emptied of what a previous run left
// (Run has killed its processes by then), or a new temporary directory
// when stateDir is empty. Run removes it when it ends.
func openInstancesRoot(stateDir string) (string, error) {
	if stateDir == "" {
		return os.MkdirTemp("", "thaw-instances-")
	}
	root := filepath.Join(stateDir, instancesDirName)
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", err
	}
	return root, nil
}

// makeInstanceDir creates the instance's own directory: its working
// directory, and where a model server keeps caches and temporary files (see
// vllm.Settings.Dir), so that nothing of it is left in /tmp or shared with
// another instance. Called with mu held, on the spawner's thread.
func (r *Runtime) makeInstanceDir(id string) (string, error) {
	if r.instRoot == "" {
		return "", errors.New("no directory for instances (see the log at start)")
	}
	dir := filepath.Join(r.instRoot, id)
	return dir, os.Mkdir(dir, 0o700)
}

// removeInstanceDir removes an exited instance's directory. Called without
// mu: a model server's caches can be large.
func (r *Runtime) removeInstanceDir(id, dir string) {
	if dir == "" {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		r.log.Warn("removing an instance's directory", "instance", id, "err", err)
	}
}
