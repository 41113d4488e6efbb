package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/meter"
	_ "github.com/thawhq/thaw/meter/drivers" // the ledger's SQLite and PostgreSQL
	"github.com/thawhq/thaw/spend"
	"github.com/thawhq/thaw/stats"
)

// meterFlags are the metering flags thaw dev and thaw server share.
type meterFlags struct {
	databaseURL  string
	prices       string
	caps         string
	startTimeout time.Duration
	spendEvery   time.Duration
	idleAlert    time.Duration
	// The deployments' time series: the sample interval and how long
	// samples are kept.
	statsInterval  time.Duration
	statsRetention time.Duration
}

// register adds --database-url, --gpu-prices, --spending-caps,
// --start-timeout, --spending-check-interval, --idle-alert,
// --stats-interval and --stats-retention to fs; dbDefault says what
// an empty --database-url means.
func (f *meterFlags) register(fs *flag.FlagSet, dbDefault string) {
	fs.StringVar(&f.databaseURL, "database-url", "", "usage ledger `database`: postgres://user@host:port/db (PostgreSQL) or sqlite:PATH (embedded SQLite); default "+dbDefault)
	fs.StringVar(&f.prices, "gpu-prices", "", "USD per GPU-hour by GPU type, TYPE=USD,... over the built-in table (see README, \"Usage and spending limits\")")
	fs.StringVar(&f.caps, "spending-caps", "", "operator's monthly spending caps, USER=USD,... (*=USD for every other user): a capped user's limit starts at the cap, cannot exceed it and cannot be removed")
	fs.DurationVar(&f.startTimeout, "start-timeout", fleet.DefaultStartTimeout, "stop an instance that holds GPUs this long without becoming ready (the deployment fails after repeated timeouts)")
	fs.DurationVar(&f.spendEvery, "spending-check-interval", 2*time.Second, "how often spend is checked against the spending limits")
	fs.DurationVar(&f.idleAlert, "idle-alert", 24*time.Hour, "tell a deployment's owner (event and webhook) when it has run this long with no request")
	fs.DurationVar(&f.statsInterval, "stats-interval", stats.DefaultInterval, "how often each deployment's time series is sampled (GET /deploy/{id}/stats; its smallest step)")
	fs.DurationVar(&f.statsRetention, "stats-retention", stats.DefaultRetention, "how long the deployments' time series samples are kept in the usage database")
}

// metering is the parsed metering configuration and its open ledger.
type metering struct {
	store        *meter.Store
	prices       meter.Prices
	policy       spend.Policy
	startTimeout time.Duration
	spendEvery   time.Duration
	idleAlert    time.Duration
	// statsInterval and statsRetention configure the stats sampler.
	statsInterval  time.Duration
	statsRetention time.Duration
}

// open parses the flags and opens the ledger; an empty --database-url is
// SQLite in dataDir. The caller closes the store.
func (f *meterFlags) open(ctx context.Context, dataDir string) (*metering, error) {
	m := &metering{startTimeout: f.startTimeout, spendEvery: f.spendEvery, idleAlert: f.idleAlert,
		statsInterval: f.statsInterval, statsRetention: f.statsRetention}
	if f.startTimeout <= 0 || f.spendEvery <= 0 || f.idleAlert <= 0 || f.statsInterval <= 0 || f.statsRetention <= 0 {
		return nil, errors.New("--start-timeout, --spending-check-interval, --idle-alert, --stats-interval and --stats-retention must be positive")
	}
	over, err := meter.ParsePrices(f.prices)
	if err != nil {
		return nil, fmt.Errorf("--gpu-prices: %w", err)
	}
	m.prices = meter.DefaultPrices().Merge(over)
	if m.policy, err = spend.ParsePolicy(f.caps); err != nil {
		return nil, fmt.Errorf("--spending-caps: %w", err)
	}
	url := f.databaseURL
	if url == "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		url = "sqlite:" + filepath.Join(dataDir, "usage.db")
	}
	if m.store, err = meter.Open(ctx, url); err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	return m, nil
}

// usageFact is the ledger's fact for a fleet usage report.
func usageFact(u fleet.Usage) meter.Fact {
	return meter.Fact{
		InstanceID: u.InstanceID, DeployID: u.DeployID, Owner: u.Owner, Model: u.Model,
		GPU: u.GPU, NumGPUs: u.NumGPUs, Kind: meter.Kind(u.Kind), At: u.At, Reason: u.Reason,
	}
}

// announcer records what a user is told (a threshold crossed, a deployment
// running idle) among their events and posts it to their webhook. Every
// replica's enforcer sees the crossing; only the leader tells it, once.
type announcer struct {
	store *meter.Store
	hooks *spend.Webhooks
	log   *slog.Logger
	leads func() bool
}

func (a announcer) announce(ctx context.Context, acct meter.Account, e spend.Event) {
	if !a.leads() {
		return
	}
	detail, _ := json.Marshal(e)
	err := a.store.AddEvent(ctx, meter.Event{Owner: e.Owner, At: e.At, Type: e.Type, DeployID: e.DeployID, Message: e.Message, Detail: detail})
	if err != nil {
		a.log.Warn("spending event not recorded", "owner", e.Owner, "err", err)
	}
	a.hooks.Post(ctx, acct.WebhookURL, acct.WebhookSecret, e)
}
