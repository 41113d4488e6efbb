package main

import (
	"context"

	"github.com/thawhq/thaw/api"
)

// statsPlane is the sampler of deployments' time series and what GET /gpus
// reads.
type statsPlane struct{}

// newStats builds the sampler of deployments' time series (and what GET
// /gpus reads); called by newControlPlane after newScaling.
func (c *controlPlane) newStats(p *process) error { return nil }

// runStats samples until ctx is done.
func (c *controlPlane) runStats(ctx context.Context) error { <-ctx.Done(); return nil }

// configure sets the API's Stats and GPUs.
func (s *statsPlane) configure(cfg *api.Config) {}
