package meter

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// GroupBy says how Summarize groups a report's items.
type GroupBy string

// The groupings of a usage report.
const (
	GroupDeployment GroupBy = "deployment" // one item per deployment (the default)
	GroupGPU        GroupBy = "gpu"        // one item per GPU type
	GroupDay        GroupBy = "day"        // one item per UTC day
	GroupWeek       GroupBy = "week"       // one item per week, Monday 00:00 UTC
)

// Tokens are the requests and tokens one deployment's model servers
// counted in one hour (Hour is its start, UTC).
type Tokens struct {
	DeployID, Owner                          string
	Hour                                     time.Time
	Requests, PromptTokens, CompletionTokens int64
}

// Item is one line of a usage report. The JSON names are a public contract
// (the deploy API's /usage).
type Item struct {
	DeployID string `json:"deploy_id,omitempty"`
	Model    string `json:"model,omitempty"`
	GPU      string `json:"gpu,omitempty"`
	NumGPUs  int    `json:"num_gpus,omitempty"`
	// Start is the bucket's start when grouped by day or week.
	Start *time.Time `json:"start,omitempty"`
	// GPUSeconds is the time GPUs were held in the window, times their
	// count; LoadingSeconds is the part of it before the model server was
	// ready (included in GPUSeconds, and billed).
	GPUSeconds     float64 `json:"gpu_seconds"`
	LoadingSeconds float64 `json:"loading_seconds"`
	// NeverReadySeconds is the part of GPUSeconds held by instances that
	// ended without ever becoming ready (a start timeout, a crash while
	// loading): paid for, nothing served.
	NeverReadySeconds float64 `json:"never_ready_seconds"`
	// CostUSD is GPUSeconds priced per GPU type, rounded to the
	// micro-dollar (statements round to cents, per line).
	CostUSD          float64 `json:"cost_usd"`
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
}

// Report is a usage report over [From, To).
type Report struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Items []Item    `json:"items"`
	Total Item      `json:"total"`
}

// Summarize prices and groups intervals clipped to [from, to), an interval
// still open counting up to now, and adds the token counts of the hours
// that start in [from, to). It is pure. gpu_seconds is the overlap in
// seconds times NumGPUs; loading_seconds is the part of it before Ready (all
// of it while not ready). An interval in the window whose GPU type has no
// price is an error (ErrUnknownGPU). by "" is GroupDeployment.
func Summarize(ivs []Interval, tokens []Tokens, from, to, now time.Time, by GroupBy, p Prices) (Report, error) {
	from, to, now = from.UTC(), to.UTC(), now.UTC()
	if !to.After(from) {
		return Report{}, fmt.Errorf("meter: empty window: to %s is not after from %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	if by == "" {
		by = GroupDeployment
	}
	bucket, err := splitterFor(by)
	if err != nil {
		return Report{}, err
	}
	s := summary{by: by, bucket: bucket, items: map[string]*itemAcc{}, gpuOf: map[string]string{}}
	for _, iv := range ivs {
		if err := s.addInterval(iv, from, to, now, p); err != nil {
			return Report{}, err
		}
	}
	for _, tk := range tokens {
		if h := tk.Hour.UTC(); !h.Before(from) && h.Before(to) {
			s.addTokens(tk)
		}
	}
	return s.report(from, to), nil
}

// itemAcc is one item being summed; cost stays unrounded until the end.
type itemAcc struct {
	Item
	cost float64
}

// summary is Summarize's accumulator.
type summary struct {
	by     GroupBy
	bucket splitter
	items  map[string]*itemAcc
	gpuOf  map[string]string // deployment -> GPU type, for tokens grouped by GPU
}

func (s *summary) item(key string, start *time.Time) *itemAcc {
	a := s.items[key]
	if a == nil {
		a = &itemAcc{}
		if start != nil {
			st := *start
			a.Start = &st
		}
		s.items[key] = a
	}
	return a
}

// addInterval adds the part of iv inside [from, to).
func (s *summary) addInterval(iv Interval, from, to, now time.Time, p Prices) error {
	start, end := maxTime(iv.Start, from), minTime(iv.end(now), to)
	if !end.After(start) {
		return nil
	}
	rate, err := p.Rate(iv.GPU)
	if err != nil {
		return fmt.Errorf("deployment %s, instance %s: %w", iv.DeployID, iv.InstanceID, err)
	}
	s.gpuOf[iv.DeployID] = iv.GPU
	serving := iv.servingFrom(now)
	n := float64(iv.NumGPUs)
	for _, piece := range s.bucket.split(iv, start, end) {
		a := s.item(piece.key, piece.start)
		secs := piece.end.Sub(piece.from).Seconds() * n
		a.GPUSeconds += secs
		a.LoadingSeconds += overlap(piece.from, piece.end, iv.Start, serving) * n
		if iv.Ready.IsZero() && !iv.End.IsZero() {
			a.NeverReadySeconds += secs
		}
		a.cost += secs / 3600 * rate
		switch s.by {
		case GroupDeployment:
			a.DeployID, a.Model, a.GPU, a.NumGPUs = iv.DeployID, iv.Model, iv.GPU, iv.NumGPUs
		case GroupGPU:
			a.GPU = iv.GPU
		}
	}
	return nil
}

func (s *summary) addTokens(tk Tokens) {
	key, start := s.bucket.tokenKey(tk, s.gpuOf)
	a := s.item(key, start)
	switch s.by {
	case GroupDeployment:
		a.DeployID = tk.DeployID
	case GroupGPU:
		a.GPU = s.gpuOf[tk.DeployID]
	}
	a.Requests += tk.Requests
	a.PromptTokens += tk.PromptTokens
	a.CompletionTokens += tk.CompletionTokens
}

// report rounds the items, sums the total and orders the items by bucket,
// then deployment, then GPU type.
func (s *summary) report(from, to time.Time) Report {
	r := Report{From: from, To: to, Items: make([]Item, 0, len(s.items))}
	var total float64
	for _, a := range s.items {
		total += a.cost
		a.CostUSD = roundTo(a.cost, 1e6)
		r.Items = append(r.Items, a.Item)
		r.Total.GPUSeconds += a.GPUSeconds
		r.Total.LoadingSeconds += a.LoadingSeconds
		r.Total.NeverReadySeconds += a.NeverReadySeconds
		r.Total.Requests += a.Requests
		r.Total.PromptTokens += a.PromptTokens
		r.Total.CompletionTokens += a.CompletionTokens
	}
	r.Total.CostUSD = roundTo(total, 1e6)
	slices.SortFunc(r.Items, func(a, b Item) int {
		if a.Start != nil && b.Start != nil {
			if c := a.Start.Compare(*b.Start); c != 0 {
				return c
			}
		}
		return cmp.Or(cmp.Compare(a.DeployID, b.DeployID), cmp.Compare(a.GPU, b.GPU))
	})
	return r
}

// piece is the part of an interval that falls in one item.
type piece struct {
	key       string
	start     *time.Time // the bucket's start, for day and week
	from, end time.Time
}

// splitter splits clipped intervals into items for one GroupBy.
type splitter interface {
	split(iv Interval, from, end time.Time) []piece
	tokenKey(tk Tokens, gpuOf map[string]string) (string, *time.Time)
}

type byKey struct{ gpu bool }

func (b byKey) split(iv Interval, from, end time.Time) []piece {
	k := iv.DeployID
	if b.gpu {
		k = iv.GPU
	}
	return []piece{{key: k, from: from, end: end}}
}

func (b byKey) tokenKey(tk Tokens, gpuOf map[string]string) (string, *time.Time) {
	if b.gpu {
		return gpuOf[tk.DeployID], nil
	}
	return tk.DeployID, nil
}

// byTime buckets by UTC day or week.
type byTime struct{ week bool }

func (b byTime) start(t time.Time) time.Time {
	if b.week {
		return WeekStart(t)
	}
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func (b byTime) next(t time.Time) time.Time {
	if b.week {
		return t.AddDate(0, 0, 7)
	}
	return t.AddDate(0, 0, 1)
}

func (b byTime) split(_ Interval, from, end time.Time) []piece {
	var out []piece
	for s := b.start(from); s.Before(end); s = b.next(s) {
		e := b.next(s)
		start := s
		out = append(out, piece{key: s.Format(time.RFC3339), start: &start, from: maxTime(from, s), end: minTime(end, e)})
	}
	return out
}

func (b byTime) tokenKey(tk Tokens, _ map[string]string) (string, *time.Time) {
	s := b.start(tk.Hour)
	return s.Format(time.RFC3339), &s
}

// splitterFor returns the splitter of by, or an error naming the valid ones.
func splitterFor(by GroupBy) (splitter, error) {
	switch by {
	case GroupDeployment:
		return byKey{}, nil
	case GroupGPU:
		return byKey{gpu: true}, nil
	case GroupDay:
		return byTime{}, nil
	case GroupWeek:
		return byTime{week: true}, nil
	}
	return nil, fmt.Errorf("meter: group_by %q: want deployment, gpu, day or week", by)
}

// roundTo rounds v to 1/per (per 100: cents).
func roundTo(v, per float64) float64 { return math.Round(v*per) / per }
