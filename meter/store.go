package meter

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNoHeld is returned by Record for a ready or released fact of an
// instance the ledger has no held fact for: an end without a start is
// refused, not guessed.
var ErrNoHeld = errors.New("meter: no held fact for instance")

// ErrBeforeHeld is returned by Record for a ready or released fact dated
// before the instance's held fact.
var ErrBeforeHeld = errors.New("meter: fact is dated before the instance was held")

// Store is the ledger, token counts and accounts in SQLite or PostgreSQL.
// It is safe for concurrent use, by several processes too.
type Store struct {
	db       *sql.DB
	postgres bool
}

// Open opens (and migrates) the store at url: "postgres://..." or
// "postgresql://..." is PostgreSQL; "sqlite:<path>" or a plain file path is
// SQLite, the file created if missing, in WAL mode with a busy timeout so
// that concurrent writers wait for each other instead of failing. An
// in-memory SQLite database is not supported (each connection would get its
// own). A schema newer than this binary knows is ErrSchemaNewer. The
// drivers are registered by importing package meter/drivers.
func Open(ctx context.Context, url string) (*Store, error) {
	s := &Store{}
	var err error
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		s.postgres = true
		s.db, err = sql.Open("pgx", url)
	default:
		var dsn string
		dsn, err = sqliteDSN(url)
		if err == nil {
			s.db, err = sql.Open("sqlite", dsn)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("meter: open: %w", err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("meter: open %s: %w", redact(url), err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// sqliteDSN turns "sqlite:<path>" or a path into modernc's DSN: every
// connection gets a 10 s busy timeout and WAL, and transactions take the
// write lock at BEGIN (a deferred one upgrading later can fail with
// SQLITE_BUSY without waiting).
func sqliteDSN(u string) (string, error) {
	p := strings.TrimPrefix(u, "sqlite:")
	p = strings.TrimPrefix(p, "//")
	if p == "" || p == ":memory:" || strings.HasPrefix(p, "file::memory:") {
		return "", fmt.Errorf("sqlite %q: want a file path", u)
	}
	if strings.ContainsAny(p, "?#") {
		return "", fmt.Errorf("sqlite %q: options in the path are not supported", u)
	}
	v := url.Values{}
	v.Add("_pragma", "busy_timeout(10000)")
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(NORMAL)")
	v.Set("_txlock", "immediate")
	return "file:" + p + "?" + v.Encode(), nil
}

// redact hides a password in a database URL for error messages.
func redact(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		if _, ok := p.User.Password(); ok {
			p.User = url.UserPassword(p.User.Username(), "xxxxx")
			return p.String()
		}
	}
	return u
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// q rewrites "?" placeholders to "$1", "$2"... for PostgreSQL (no query
// here has a "?" inside a string literal).
func (s *Store) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func us(t time.Time) int64 { return t.UnixMicro() }

// fromUS converts stored microseconds to a UTC time; 0 is the zero time.
func fromUS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// Record appends f to the ledger. It is idempotent per (instance, kind):
// a fact already recorded adds nothing and is not an error (the first
// fact wins, so a runtime re-reporting its instances after a restart or a
// leader change changes nothing), and two writers recording the same fact
// at once insert one row. A ready or released fact takes the instance's
// deployment, owner, model and GPUs from its held fact; with none it is
// ErrNoHeld, and one dated before it is ErrBeforeHeld.
func (s *Store) Record(ctx context.Context, f Fact) error {
	if err := f.check(); err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	if f.Kind == KindHeld {
		_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO facts
			(instance_id, kind, deploy_id, owner, model, gpu, num_gpus, at_us, reason, recorded_us)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (instance_id, kind) DO NOTHING`),
			f.InstanceID, string(f.Kind), f.DeployID, f.Owner, f.Model, f.GPU, f.NumGPUs, us(f.At), f.Reason, now)
		if err != nil {
			return fmt.Errorf("meter: record %s %s: %w", f.InstanceID, f.Kind, err)
		}
		return nil
	}
	// One statement, so that the held fact it copies from and the insert
	// are consistent without a transaction. (SQLite needs the WHERE before
	// ON CONFLICT in an INSERT ... SELECT; it is there.)
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO facts
		(instance_id, kind, deploy_id, owner, model, gpu, num_gpus, at_us, reason, recorded_us)
		SELECT instance_id, ?, deploy_id, owner, model, gpu, num_gpus, ?, ?, ?
		FROM facts WHERE instance_id = ? AND kind = ? AND at_us <= ?
		ON CONFLICT (instance_id, kind) DO NOTHING`),
		string(f.Kind), us(f.At), f.Reason, now, f.InstanceID, string(KindHeld), us(f.At))
	if err != nil {
		return fmt.Errorf("meter: record %s %s: %w", f.InstanceID, f.Kind, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return nil
	}
	// Nothing inserted: already recorded (fine), or refused.
	var heldUS int64
	err = s.db.QueryRowContext(ctx, s.q("SELECT at_us FROM facts WHERE instance_id = ? AND kind = ?"),
		f.InstanceID, string(KindHeld)).Scan(&heldUS)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w %s (%s at %s)", ErrNoHeld, f.InstanceID, f.Kind, f.At.UTC().Format(time.RFC3339Nano))
	case err != nil:
		return fmt.Errorf("meter: record %s %s: %w", f.InstanceID, f.Kind, err)
	case us(f.At) < heldUS:
		var exists int
		err := s.db.QueryRowContext(ctx, s.q("SELECT COUNT(*) FROM facts WHERE instance_id = ? AND kind = ?"),
			f.InstanceID, string(f.Kind)).Scan(&exists)
		if err != nil {
			return fmt.Errorf("meter: record %s %s: %w", f.InstanceID, f.Kind, err)
		}
		if exists == 0 {
			return fmt.Errorf("%w: %s %s at %s, held at %s", ErrBeforeHeld, f.InstanceID, f.Kind,
				f.At.UTC().Format(time.RFC3339Nano), fromUS(heldUS).Format(time.RFC3339Nano))
		}
	}
	return nil
}

// intervalsQuery folds each held fact with its ready and released facts.
const intervalsQuery = `SELECT h.instance_id, h.deploy_id, h.owner, h.model, h.gpu, h.num_gpus,
	h.at_us, COALESCE(r.at_us, 0), COALESCE(e.at_us, 0), COALESCE(e.reason, '')
	FROM facts h
	LEFT JOIN facts r ON r.instance_id = h.instance_id AND r.kind = 'ready'
	LEFT JOIN facts e ON e.instance_id = h.instance_id AND e.kind = 'released'
	WHERE h.kind = 'held' `

// Intervals returns the intervals that overlap [from, to), open ones
// included, of one owner ("" is every owner), ordered by start.
func (s *Store) Intervals(ctx context.Context, owner string, from, to time.Time) ([]Interval, error) {
	return s.intervals(ctx, intervalsQuery+`AND h.at_us < ? AND (e.at_us IS NULL OR e.at_us > ?)
		AND (? = '' OR h.owner = ?) ORDER BY h.at_us, h.instance_id`,
		us(to), us(from), owner, owner)
}

// OpenIntervals returns every interval with no released fact, ordered by
// start: after a restart, the ones the runtime no longer has are to be
// closed with the runtime's record of when they ended.
func (s *Store) OpenIntervals(ctx context.Context) ([]Interval, error) {
	return s.intervals(ctx, intervalsQuery+`AND e.at_us IS NULL ORDER BY h.at_us, h.instance_id`)
}

func (s *Store) intervals(ctx context.Context, query string, args ...any) ([]Interval, error) {
	return queryRows(ctx, s, "intervals", func(rows *sql.Rows) (Interval, error) {
		var iv Interval
		var start, ready, end int64
		err := rows.Scan(&iv.InstanceID, &iv.DeployID, &iv.Owner, &iv.Model, &iv.GPU, &iv.NumGPUs,
			&start, &ready, &end, &iv.EndReason)
		iv.Start, iv.Ready, iv.End = fromUS(start), fromUS(ready), fromUS(end)
		return iv, err
	}, query, args...)
}

// queryRows runs query and returns its rows, each read by scan, in order.
// what names the read in an error: "meter: <what>: ...".
func queryRows[T any](ctx context.Context, s *Store, what string, scan func(*sql.Rows) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("meter: %s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("meter: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("meter: %s: %w", what, err)
	}
	return out, nil
}

// AddTokens adds t's counts to its deployment's row for t.Hour (truncated
// to the hour, UTC), creating it if missing.
func (s *Store) AddTokens(ctx context.Context, t Tokens) error {
	if t.DeployID == "" {
		return errors.New("meter: add tokens: no deployment")
	}
	if t.Requests < 0 || t.PromptTokens < 0 || t.CompletionTokens < 0 {
		return fmt.Errorf("meter: add tokens for %s: negative count", t.DeployID)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tokens
		(deploy_id, hour_us, owner, requests, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (deploy_id, hour_us) DO UPDATE SET
			requests = tokens.requests + excluded.requests,
			prompt_tokens = tokens.prompt_tokens + excluded.prompt_tokens,
			completion_tokens = tokens.completion_tokens + excluded.completion_tokens`),
		t.DeployID, us(t.Hour.UTC().Truncate(time.Hour)), t.Owner, t.Requests, t.PromptTokens, t.CompletionTokens)
	if err != nil {
		return fmt.Errorf("meter: add tokens for %s: %w", t.DeployID, err)
	}
	return nil
}

// Tokens returns the rows of one owner ("" is every owner) whose hour
// starts in [from, to), ordered by hour and deployment.
func (s *Store) Tokens(ctx context.Context, owner string, from, to time.Time) ([]Tokens, error) {
	return queryRows(ctx, s, "tokens", func(rows *sql.Rows) (Tokens, error) {
		var t Tokens
		var hour int64
		err := rows.Scan(&t.DeployID, &t.Owner, &hour, &t.Requests, &t.PromptTokens, &t.CompletionTokens)
		t.Hour = fromUS(hour)
		return t, err
	}, `SELECT deploy_id, owner, hour_us, requests, prompt_tokens, completion_tokens
		FROM tokens WHERE hour_us >= ? AND hour_us < ? AND (? = '' OR owner = ?)
		ORDER BY hour_us, deploy_id`, us(from), us(to), owner, owner)
}

// Account is a user's spending limit, in USD per calendar month (UTC), and
// what was notified of it this month.
type Account struct {
	Owner string
	// SpendingLimitUSD is the monthly limit; 0 is none.
	SpendingLimitUSD float64
	// WebhookURL receives the threshold notifications; "" is none.
	WebhookURL string
	// WebhookSecret signs them (HMAC-SHA256); it is never shown back.
	WebhookSecret string
	// Notified is the highest threshold percent already notified in
	// NotifiedMonth: 0, 50, 80 or 100.
	Notified int
	// NotifiedMonth is the first instant (UTC) of the month Notified
	// belongs to.
	NotifiedMonth time.Time
}

// Account returns owner's account; a missing one is the zero Account with
// Owner set.
func (s *Store) Account(ctx context.Context, owner string) (Account, error) {
	a := Account{Owner: owner}
	var month int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT spending_limit_usd, webhook_url, webhook_secret, notified, notified_month_us
		FROM accounts WHERE owner = ?`), owner).Scan(&a.SpendingLimitUSD, &a.WebhookURL, &a.WebhookSecret, &a.Notified, &month)
	if errors.Is(err, sql.ErrNoRows) {
		return a, nil
	}
	if err != nil {
		return Account{}, fmt.Errorf("meter: account %s: %w", owner, err)
	}
	a.NotifiedMonth = fromUS(month)
	return a, nil
}

// PutAccount sets a's limit and webhook, creating the row if needed. The
// notified threshold is not the caller's to set (MarkNotified is): a
// changed limit starts it again from zero, so the thresholds of the new
// limit are announced.
func (s *Store) PutAccount(ctx context.Context, a Account) error {
	switch {
	case a.Owner == "":
		return errors.New("meter: put account: no owner")
	case math.IsNaN(a.SpendingLimitUSD) || math.IsInf(a.SpendingLimitUSD, 0) || a.SpendingLimitUSD < 0:
		return fmt.Errorf("meter: put account %s: spending limit %v: want a number >= 0", a.Owner, a.SpendingLimitUSD)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO accounts
		(owner, spending_limit_usd, webhook_url, webhook_secret, notified, notified_month_us) VALUES (?, ?, ?, ?, 0, 0)
		ON CONFLICT (owner) DO UPDATE SET
			notified = CASE WHEN accounts.spending_limit_usd = excluded.spending_limit_usd THEN accounts.notified ELSE 0 END,
			spending_limit_usd = excluded.spending_limit_usd,
			webhook_url = excluded.webhook_url,
			webhook_secret = excluded.webhook_secret`),
		a.Owner, a.SpendingLimitUSD, a.WebhookURL, a.WebhookSecret)
	if err != nil {
		return fmt.Errorf("meter: put account %s: %w", a.Owner, err)
	}
	return nil
}

// MarkNotified records that owner was told threshold (50, 80 or 100) in
// month, unless a threshold as high was already recorded for that month.
// It reports whether this call recorded it: of several replicas that
// cross the same threshold at once, exactly one announces it.
func (s *Store) MarkNotified(ctx context.Context, owner string, month time.Time, threshold int) (bool, error) {
	if threshold != 50 && threshold != 80 && threshold != 100 {
		return false, fmt.Errorf("meter: mark notified %s: threshold %d: want 50, 80 or 100", owner, threshold)
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO accounts
		(owner, spending_limit_usd, webhook_url, webhook_secret, notified, notified_month_us) VALUES (?, 0, '', '', ?, ?)
		ON CONFLICT (owner) DO UPDATE SET notified = excluded.notified, notified_month_us = excluded.notified_month_us
		WHERE accounts.notified_month_us <> excluded.notified_month_us OR accounts.notified < excluded.notified`),
		owner, threshold, us(month))
	if err != nil {
		return false, fmt.Errorf("meter: mark notified %s: %w", owner, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("meter: mark notified %s: %w", owner, err)
	}
	return n == 1, nil
}

// Event is something thaw told a user: a spending threshold crossed, a
// deployment running idle. The JSON names are a public contract
// (GET /account/events).
type Event struct {
	// ID is a cursor, ordered as the events are (EventID, ParseEventID);
	// set on a deployment's events (DeployEvents, Journal.Record).
	ID       string    `json:"id,omitempty"`
	Owner    string    `json:"-"`
	At       time.Time `json:"at"`
	Type     string    `json:"type"`
	DeployID string    `json:"deploy_id,omitempty"`
	Message  string    `json:"message"`
	// Detail is the event's JSON body, as its webhook carried it.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// AddEvent appends e to its owner's events.
func (s *Store) AddEvent(ctx context.Context, e Event) error {
	detail := string(e.Detail)
	if detail == "" {
		detail = "null"
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO events (owner, at_us, type, deploy_id, message, detail)
		VALUES (?, ?, ?, ?, ?, ?)`), e.Owner, us(e.At), e.Type, e.DeployID, e.Message, detail)
	if err != nil {
		return fmt.Errorf("meter: add event for %s: %w", e.Owner, err)
	}
	return nil
}

// Events returns owner's account events (not the deployments' journals:
// DeployEvents reads those) at or after since, oldest first, at most limit
// of the newest.
func (s *Store) Events(ctx context.Context, owner string, since time.Time, limit int) ([]Event, error) {
	out, err := queryRows(ctx, s, "events of "+owner, func(rows *sql.Rows) (Event, error) {
		e := Event{Owner: owner}
		var at int64
		var detail string
		err := rows.Scan(&at, &e.Type, &e.DeployID, &e.Message, &detail)
		e.At, e.Detail = fromUS(at), storedDetail(detail)
		return e, err
	}, `SELECT at_us, type, deploy_id, message, detail FROM events
		WHERE owner = ? AND at_us >= ? AND journal = 0 ORDER BY at_us DESC LIMIT ?`, owner, us(since), limit)
	slices.Reverse(out)
	return out, err
}

// storedDetail is an event's detail column as its JSON: none for a stored
// null.
func storedDetail(detail string) json.RawMessage {
	if detail == "null" {
		return nil
	}
	return json.RawMessage(detail)
}
