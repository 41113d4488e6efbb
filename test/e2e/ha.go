package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Roles of a thaw server replica, as GET /healthz says them.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// Health is what GET /healthz of a thaw server replica says of its role.
type Health struct {
	Status string `json:"status"`
	// Role is RoleLeader or RoleFollower.
	Role string `json:"role"`
	// Leader is the ID of the replica that leads, as this one last saw
	// it; "" when it knows of none. A leader names itself.
	Leader string `json:"leader"`
}

// healthClient bounds one /healthz request: a replica that does not answer
// within a second is as good as down to a test polling it.
var healthClient = &http.Client{Timeout: time.Second}

// GetHealth reads GET base/healthz of a thaw server replica (base is
// "http://host:port").
func GetHealth(ctx context.Context, base string) (Health, error) {
	r, err := Send(ctx, healthClient, http.MethodGet, base+"/healthz", "", nil)
	if err != nil {
		return Health{}, err
	}
	if r.Status != http.StatusOK {
		return Health{}, fmt.Errorf("GET %s/healthz: HTTP %d %s", base, r.Status, r.Body)
	}
	var h Health
	if err := json.Unmarshal(r.Body, &h); err != nil {
		return Health{}, fmt.Errorf("GET %s/healthz: %w: %s", base, err, r.Body)
	}
	return h, nil
}

// ReplicaPID is replica n's (1-based) process ID now: that of the process
// RestartReplica last started for it, else the script's.
func (c *Cluster) ReplicaPID(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.restarted[n]; p != nil {
		return p.PID()
	}
	return c.Replicas[n-1].PID
}
