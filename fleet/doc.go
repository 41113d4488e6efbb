// Package fleet turns deployments and the autoscaler's desired counts into
// model-server instances on a Runtime (local processes in dev mode, Nomad in
// production).
//
// It owns what is thaw's policy rather than the scheduler's: the per-user GPU
// quota at run time, readiness (an instance is routable only once its model
// server answers /health and lists the model), draining on scale-down (the
// endpoint leaves load balancing first; the instance stops when its in-flight
// count reaches zero), replacement of failed instances with backoff and
// crash-loop detection (a deployment whose instances keep failing before
// they get ready is failed and starts no more until it is updated), a start
// timeout (an instance that holds its GPUs for Config.StartTimeout without
// getting ready is stopped and counts as such a failure), and the honest
// status of each deployment: how many run, how many wait, and why. One rule
// classifies an instance (pending, starting, running, draining: inst.state
// in state.go); the deploy API's status and the thaw_instances metric both
// count with it.
//
// Usage facts (usage.go) tell the meter when each instance's GPUs were
// taken and freed, by the runtime's own record, when it got ready, and how
// it ended.
//
// Lifecycle events (journal.go) tell a deployment's owner what happened to
// it: instances placed, pending and why, ready with their cold start,
// stopped or failed, and the deployment failed; Instances lists each
// instance in its state since it entered it.
//
// EventQueue is the non-blocking, ordered report queue behind every
// Runtime's Events channel (localrt and nomad use it).
//
// All decisions run on Run's goroutine; readers (the deploy API, the
// autoscaler, metrics) take Fleet.mu briefly.
package fleet
