package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"time"
)

// DefaultWatchInterval is how often a UsersWatcher reads the users file
// when its config does not say: a revoked token stops authenticating within
// about this long.
const DefaultWatchInterval = time.Second

// UsersWatcherConfig configures NewUsersWatcher.
type UsersWatcherConfig struct {
	// Path is the users file (see ParseUsers). Required.
	Path string
	// Users receives the file's users (Replace) each time the file changes
	// to content that parses and lists at least one user. Required.
	Users *Users
	// Interval is how often the file is read. Zero means
	// DefaultWatchInterval.
	Interval time.Duration
	// Reload forces a reload, whether the file changed or not, and logs the
	// outcome, for each value received; cmd wires SIGHUP to it. Nil: none.
	Reload <-chan os.Signal
	// Logger receives one line per reload that changed the users and per
	// new problem with the file. Nil means slog.Default().
	Logger *slog.Logger
}

// UsersWatcher keeps Users in step with the users file, so that an
// operator adds a user or revokes a token without a restart.
//
// It reads the whole file every Interval and compares its SHA-256 with the
// last content it read: unlike inotify, that sees a file replaced by a
// rename (what editors and `mv` do) and a symlink swapped under it (what
// Kubernetes ConfigMaps and Nomad templates do), and costs one small read a
// second. A file that cannot be read or parsed, or lists no user, leaves the
// users as they were and is logged once (a broken edit never locks everyone
// out); a later valid version is applied as usual.
//
// A file rewritten in place can be read half-written: a cut line does not
// parse and is ignored, but a cut between lines reads as fewer users until
// the next read. Write the new file beside it and rename it over.
type UsersWatcher struct {
	cfg UsersWatcherConfig
	log *slog.Logger

	// Run's state, touched by its goroutine only.
	seen    [sha256.Size]byte // digest of the content last parsed
	lastErr string            // the problem last logged; "" when none
}

// NewUsersWatcher returns a watcher for cfg; Run starts it.
func NewUsersWatcher(cfg UsersWatcherConfig) (*UsersWatcher, error) {
	switch {
	case cfg.Path == "":
		return nil, errors.New("auth: users watcher: no path")
	case cfg.Users == nil:
		return nil, errors.New("auth: users watcher: no users")
	case cfg.Interval < 0:
		return nil, errors.New("auth: users watcher: negative interval")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultWatchInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &UsersWatcher{cfg: cfg, log: log.With("users_file", cfg.Path)}, nil
}

// Run reads the file at once, then every Interval and on each Reload,
// until ctx is done; it returns nil then.
func (w *UsersWatcher) Run(ctx context.Context) error {
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	w.check(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.check(false)
		case <-w.cfg.Reload:
			w.check(true)
		}
	}
}

// check reads the file and, if its content is new or forced is set,
// applies it.
func (w *UsersWatcher) check(forced bool) {
	data, err := os.ReadFile(w.cfg.Path)
	if err != nil {
		// Parse the file again when it is back, even unchanged: the
		// problem gets its "resolved" line.
		w.seen = [sha256.Size]byte{}
		w.fail(err, forced)
		return
	}
	sum := sha256.Sum256(data)
	if sum == w.seen && !forced {
		return
	}
	w.seen = sum
	hashes, err := parseUsersFile(w.cfg.Path, data)
	if err != nil {
		w.fail(err, forced)
		return
	}
	change := w.cfg.Users.Replace(hashes)
	level := slog.LevelInfo
	if change.Empty() && !forced && w.lastErr == "" {
		level = slog.LevelDebug
	}
	w.lastErr = ""
	w.log.Log(context.Background(), level, "users file loaded",
		"users", len(hashes), "added", change.Added, "removed", change.Removed,
		"new_token", change.NewToken, "forced", forced)
}

// fail logs err unless it is the problem already logged (a file broken for
// an hour logs once, not 3600 times); a forced reload always logs.
func (w *UsersWatcher) fail(err error, forced bool) {
	if err.Error() == w.lastErr && !forced {
		return
	}
	w.lastErr = err.Error()
	w.log.Error("users file not applied: keeping the users loaded before",
		"users", w.cfg.Users.Len(), "err", err, "forced", forced)
}
