package meter

// A deployment's samples: what the stats sampler writes and
// GET /deploy/{id}/stats reads.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Counts is a deployment's state at one moment: its instances and
// requests.
type Counts struct {
	// Instances by state, as the fleet counts them (pending includes the
	// wanted instances the GPU quota holds back).
	Running  int `json:"running"`
	Starting int `json:"starting"`
	Pending  int `json:"pending"`
	Draining int `json:"draining"`
	// Held requests (waiting in an activator for an instance) and requests
	// in flight (forwarded, not answered), summed over activator replicas.
	Held     int `json:"held"`
	InFlight int `json:"in_flight"`
}

// Sample is one deployment's state at one moment (At) and what its model
// servers counted since the previous sample: one row of its time series.
// The JSON is the stored form (the Counts' fields at its top level).
type Sample struct {
	DeployID string    `json:"-"`
	Owner    string    `json:"-"`
	At       time.Time `json:"-"`
	Counts
	// Span is the seconds the counts below cover: since the previous
	// sample.
	Span float64 `json:"span"`
	// Requests finished, prompt and generated tokens, and the time to first
	// token histogram (nil: nothing observed), counted by the deployment's
	// model servers during Span.
	Requests         int64      `json:"requests,omitempty"`
	PromptTokens     int64      `json:"prompt_tokens,omitempty"`
	CompletionTokens int64      `json:"completion_tokens,omitempty"`
	TTFT             *Histogram `json:"ttft,omitempty"`
}

// Active reports whether a request was held, in flight or finished in s.
func (s Sample) Active() bool {
	return s.Held > 0 || s.InFlight > 0 || s.Requests > 0
}

// AddSamples writes samples; a sample of a deployment at a time already
// written is left as it was (two writers insert one row).
func (s *Store) AddSamples(ctx context.Context, samples []Sample) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("meter: add samples: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO stats (deploy_id, owner, at_us, active, sample)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (deploy_id, at_us) DO NOTHING`))
	if err != nil {
		return fmt.Errorf("meter: add samples: %w", err)
	}
	defer stmt.Close()
	for _, sm := range samples {
		if sm.DeployID == "" || sm.At.IsZero() {
			return errors.New("meter: add samples: a sample without deployment or time")
		}
		b, err := json.Marshal(sm)
		if err != nil {
			return fmt.Errorf("meter: add samples: %w", err)
		}
		active := 0
		if sm.Active() {
			active = 1
		}
		if _, err := stmt.ExecContext(ctx, sm.DeployID, sm.Owner, us(sm.At), active, string(b)); err != nil {
			return fmt.Errorf("meter: add sample of %s: %w", sm.DeployID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("meter: add samples: %w", err)
	}
	return nil
}

// Samples returns a deployment's samples taken in [from, to), oldest
// first.
func (s *Store) Samples(ctx context.Context, deployID string, from, to time.Time) ([]Sample, error) {
	return queryRows(ctx, s, "samples of "+deployID, func(rows *sql.Rows) (Sample, error) {
		var sm Sample
		var body string
		var at int64
		if err := rows.Scan(&sm.Owner, &at, &body); err != nil {
			return sm, err
		}
		if err := json.Unmarshal([]byte(body), &sm); err != nil {
			return sm, fmt.Errorf("sample at %d: %w", at, err)
		}
		sm.DeployID, sm.At = deployID, fromUS(at)
		return sm, nil
	}, `SELECT owner, at_us, sample FROM stats
		WHERE deploy_id = ? AND at_us >= ? AND at_us < ? ORDER BY at_us`, deployID, us(from), us(to))
}

// LastActive returns the time of a deployment's newest active sample (see
// Sample.Active), ok false when it has none.
func (s *Store) LastActive(ctx context.Context, deployID string) (time.Time, bool, error) {
	var at sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT MAX(at_us) FROM stats WHERE deploy_id = ? AND active = 1`),
		deployID).Scan(&at)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("meter: last request of %s: %w", deployID, err)
	}
	if !at.Valid {
		return time.Time{}, false, nil
	}
	return fromUS(at.Int64), true, nil
}

// PruneSamples deletes the samples taken before before and returns how
// many it deleted.
func (s *Store) PruneSamples(ctx context.Context, before time.Time) (int64, error) {
	return s.deleteRows(ctx, "prune samples", `DELETE FROM stats WHERE at_us < ?`, us(before))
}

// deleteRows runs the DELETE statement query and returns how many rows it
// deleted; what names it in an error.
func (s *Store) deleteRows(ctx context.Context, what, query string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return 0, fmt.Errorf("meter: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("meter: %s: %w", what, err)
	}
	return n, nil
}

// ColdStarts returns the instances of a deployment that became ready in
// [from, to): their intervals with Start (GPUs held) and Ready set (End
// is not read), ordered by Ready.
func (s *Store) ColdStarts(ctx context.Context, deployID string, from, to time.Time) ([]Interval, error) {
	return queryRows(ctx, s, "cold starts of "+deployID, func(rows *sql.Rows) (Interval, error) {
		iv := Interval{DeployID: deployID}
		var start, ready int64
		err := rows.Scan(&iv.InstanceID, &start, &ready)
		iv.Start, iv.Ready = fromUS(start), fromUS(ready)
		return iv, err
	}, `SELECT r.instance_id, h.at_us, r.at_us
		FROM facts r JOIN facts h ON h.instance_id = r.instance_id AND h.kind = 'held'
		WHERE r.kind = 'ready' AND r.deploy_id = ? AND r.at_us >= ? AND r.at_us < ?
		ORDER BY r.at_us, r.instance_id`, deployID, us(from), us(to))
}
