package fleet

import (
	"context"
	"errors"
	"time"
)

// Spec describes the instances of one deployment, as a runtime needs them.
type Spec struct {
	DeployID string
	Owner    string
	// Model is the name the model server serves: "<owner>/<model_name>".
	Model        string
	GPU          string // GPU type, e.g. "A100-80GB"
	NumGPUs      int
	MaxBatchSize int
	Repo         string
	Revision     string
	ExtraArgs    []string
	// HFToken is secret: runtimes pass it to the model server without
	// logging it or putting it in a job spec.
	HFToken string
}

// Phase is where a runtime instance is in its life.
type Phase string

// Runtime phases. Readiness (the model server answers) is not a runtime
// phase: the fleet probes PhaseRunning instances itself.
const (
	// PhasePending: wanted, but not placed (no free GPU, ...). Reason says why.
	PhasePending Phase = "pending"
	// PhaseRunning: placed and started; Addr is where it will listen.
	PhaseRunning Phase = "running"
	// PhaseFailed: exited or could not start. Reason says why. The runtime
	// has released its resources; the fleet decides whether to replace it.
	PhaseFailed Phase = "failed"
	// PhaseStopped: stopped on request; resources released.
	PhaseStopped Phase = "stopped"
)

// Instance is a runtime's report on one instance.
type Instance struct {
	ID       string
	DeployID string
	Phase    Phase
	// Addr is host:port of the model server, set from PhaseRunning on.
	Addr string
	// Reason is a human-readable explanation for pending and failed.
	Reason string
	// Held is when the runtime took the instance's GPUs, from the
	// runtime's own record (the process started; the Nomad allocation was
	// placed), set from PhaseRunning on. The meter bills from it.
	Held time.Time
	// Released is when the runtime freed the GPUs (the process exited; the
	// allocation became terminal), set with PhaseFailed and PhaseStopped
	// when the instance had been running.
	Released time.Time
}

// Runtime starts and stops model-server instances. Implementations: the local
// process runtime (localrt) and Nomad (nomad). A runtime reports every phase
// change of every instance on Events, in order per instance.
type Runtime interface {
	// Start asks for one more instance of spec and returns its ID at once.
	// The instance may stay pending until capacity frees; the runtime places
	// pending instances by itself, in the order they were started.
	Start(ctx context.Context, spec Spec) (id string, err error)
	// Stop stops one instance (pending or running) and releases its
	// resources. Stopping an unknown or already stopped instance is not an
	// error.
	Stop(ctx context.Context, id string) error
	// Events delivers instance reports. The channel is never closed while
	// the runtime runs.
	Events() <-chan Instance
}

// History is implemented by runtimes that keep a record of instances after
// they end (Nomad keeps allocations until its garbage collection; localrt
// keeps its state file). After a restart the meter asks it when an instance
// whose end thaw did not see freed its GPUs, instead of guessing.
type History interface {
	// Ended reports when instance id freed its GPUs. ok is false while the
	// instance still runs. An instance the runtime has no record of is
	// ErrUnknownInstance.
	Ended(ctx context.Context, id string) (at time.Time, ok bool, err error)
}

// ErrUnknownInstance: the runtime has no record of the instance.
var ErrUnknownInstance = errors.New("fleet: unknown instance")
