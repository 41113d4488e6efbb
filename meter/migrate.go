package meter

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrSchemaNewer is returned by Open when the database's schema is newer
// than this binary knows: a newer thaw migrated it, and this one must not
// write to it.
var ErrSchemaNewer = errors.New("meter: database schema is newer than this thaw")

// migration is one numbered schema step.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations parses the embedded steps, numbered 1, 2, ... without gaps.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for i, name := range names { // Glob sorts; names are zero-padded
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("meter: migration %s: want number %04d", base, i+1)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(base, ".sql"), stmts: splitSQL(string(b))})
	}
	return out, nil
}

// splitSQL splits a migration into statements at semicolons that end a
// line, dropping "--" comment lines.
func splitSQL(s string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(s) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if t := strings.TrimSpace(cur.String()); t != "" {
		out = append(out, t)
	}
	return out
}

// migrate brings the schema up to the newest embedded version, in one
// transaction, and is a no-op when it is there already. Two processes
// migrating at once are serialised: PostgreSQL by an advisory lock, SQLite
// by the write lock its immediate transactions take.
func (s *Store) migrate(ctx context.Context) error {
	steps, err := migrations()
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("meter: migrate: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		// Any constant key: it only serialises meter's own migrations.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7461687701)"); err != nil {
			return fmt.Errorf("meter: migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER NOT NULL PRIMARY KEY,
		name TEXT NOT NULL,
		applied_us BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("meter: migrate: %w", err)
	}
	var cur sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&cur); err != nil {
		return fmt.Errorf("meter: migrate: read version: %w", err)
	}
	if int(cur.Int64) > len(steps) {
		return fmt.Errorf("%w: it is at version %d, this binary knows up to %d", ErrSchemaNewer, cur.Int64, len(steps))
	}
	for _, m := range steps[cur.Int64:] {
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("meter: migration %s: %w", m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, name, applied_us) VALUES (?, ?, ?)"),
			m.version, m.name, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("meter: migration %s: %w", m.name, err)
		}
	}
	return tx.Commit()
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int {
	steps, err := migrations()
	if err != nil {
		return 0
	}
	return len(steps)
}
