package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/meter"
)

// DeployEventsQuery selects a deployment's events. Zero fields are the
// server's defaults: the newest 200 of the last 24 hours.
type DeployEventsQuery struct {
	// Since: the events at or after it (the newest Limit of them).
	Since time.Time
	// After, an event's ID: the events after it (the oldest Limit of
	// them). It wins over Since.
	After string
	// Limit is the most events returned, 1..api.MaxDeployEvents.
	Limit int
}

func (q DeployEventsQuery) values() url.Values {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if q.After != "" {
		v.Set("after", q.After)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// DeployEvents returns deployment id's events (GET /deploy/{id}/events),
// oldest first.
func (c *Client) DeployEvents(ctx context.Context, id string, q DeployEventsQuery) ([]meter.Event, error) {
	v, err := decode[api.EventsView](c.DeployEventsRaw(ctx, id, q))
	return v.Events, err
}

// DeployEventsRaw is DeployEvents returning the server's JSON unchanged.
func (c *Client) DeployEventsRaw(ctx context.Context, id string, q DeployEventsQuery) (json.RawMessage, error) {
	p, err := deployPath(id)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodGet, withQuery(p+"/events", q.values()), nil)
}

// Instances returns deployment id's instances (GET /deploy/{id}/instances).
func (c *Client) Instances(ctx context.Context, id string) ([]api.InstanceView, error) {
	p, err := deployPath(id)
	if err != nil {
		return nil, err
	}
	v, err := decode[api.InstancesView](c.do(ctx, http.MethodGet, p+"/instances", nil))
	return v.Instances, err
}

// followRetry is how long FollowDeployEvents waits before it reconnects (a
// variable for the tests).
var followRetry = time.Second

// FollowDeployEvents streams deployment id's events (GET
// /deploy/{id}/events as server-sent events) to fn, first those q selects,
// then each new one, until ctx ends (nil) or fn or the server refuses
// (that error). A broken connection (thaw restarted) is reopened after the
// last event received, so none is lost or repeated.
func (c *Client) FollowDeployEvents(ctx context.Context, id string, q DeployEventsQuery, fn func(meter.Event) error) error {
	p, err := deployPath(id)
	if err != nil {
		return err
	}
	for {
		fatal, err := c.followOnce(ctx, p, &q, fn)
		switch {
		case ctx.Err() != nil:
			return nil
		case fatal:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followRetry):
		}
	}
}

// followOnce reads one stream, moving q.After past each event handed to
// fn. fatal is true for an error a new connection would not cure: the
// server's refusal, fn's error, an event that is not one.
func (c *Client) followOnce(ctx context.Context, path string, q *DeployEventsQuery, fn func(meter.Event) error) (fatal bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, NormalizeURL(c.BaseURL)+withQuery(path+"/events", q.values()), nil)
	if err != nil {
		return true, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "text/event-stream")
	hc := http.Client{} // no timeout: the stream lasts until ctx ends
	if c.HTTP != nil {
		hc = *c.HTTP
		hc.Timeout = 0
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return resp.StatusCode < 500, decodeError(resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxBody)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // id:, event:, a blank line or a keepalive comment
		}
		var e meter.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return true, fmt.Errorf("decode event: %w", err)
		}
		if err := fn(e); err != nil {
			return true, err
		}
		q.After = e.ID
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, io.ErrUnexpectedEOF
}
