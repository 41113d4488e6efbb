// Package autoscaler decides how many instances each deployment needs and
// applies that count to the fleet.
//
// It owns two things:
//
//   - Decide, a pure function (no I/O, no locks, no clock) from a
//     deployment's previous State and one observation (now, its spec, the
//     instances already asked for, the current demand) to a Decision: the
//     absolute desired count and a human-readable reason. Knative's KPA
//     (pkg/autoscaler/scaling/autoscaler.go, Scale(logger, now)) is the
//     model.
//   - Loop, which every Tick reads demand for all deployments from a
//     DemandSource (Redis in production), calls Decide per deployment and
//     calls Fleet.SetDesired when the count changes. Wake evaluates one
//     deployment at once, so the first request for a deployment at zero
//     starts an instance without waiting for a tick.
//
// Demand of a deployment is the requests that want a slot: held in
// activators, in flight at instances, and waiting inside model servers
// (vLLM's num_requests_waiting). One instance serves max_batch_size of them
// at once (times TargetUtilization). The instances counted as present are
// running plus pending, placed or not, and Desired is absolute: a burst seen
// on several ticks while instances start asks for its capacity once, never
// once per tick (over-scaling because pending instances are not counted is a
// top complaint about other autoscalers).
//
// # Defaults and why
//
// Knative's KPA uses a 60s stable window, a 6s panic window entered at 2x
// capacity, a 2s decision tick and a 30s scale-to-zero grace period. The
// Nomad Autoscaler evaluates every 10s with a 5m cooldown, and cannot wake a
// job on a request. thaw's defaults:
//
//   - StableWindow 60s, PanicWindow 6s, PanicThreshold 2.0: Knative's values.
//     Demand here is a level (requests present), not a rate, so the windows
//     take the maximum rather than the average: a held request is real.
//   - Tick 1s: half of Knative's 2s, because one Redis read per tick is cheap
//     and GPU cold starts are long enough that every second of reaction
//     counts. The Nomad Autoscaler's 10s is too slow for bursts; Wake makes
//     the zero-to-one case immediate regardless of the tick.
//   - Scale-up is immediate (no cooldown, no rate limit): a GPU instance
//     takes minutes to load weights, so any delay adds directly to the wait
//     of held requests (Ray Serve's 30s upscale delay is the example to
//     avoid).
//   - ScaleDownDelay 30s, on top of the 60s stable window: an asymmetric
//     cooldown like Knative's scale-to-zero grace. Flapping costs a cold
//     start of minutes, but Nomad's 5m cooldown would keep idle GPUs billed
//     far longer than needed.
//   - IdleTimeout 5m: a deployment with min_instances 0 keeps one instance
//     until it has seen no demand for 5 minutes, then goes to zero. Knative
//     reaches zero after about 90s (window plus grace), but its pods start in
//     seconds; an LLM instance starts in minutes, so a few idle minutes of
//     one instance are cheaper for users than a cold start on every pause.
//     Going idle forgets the demand the windows still hold: it is gone, and
//     an idle timeout shorter than a window (3s against the 6s panic
//     window) must not wake the deployment again on the request it
//     idled out after. Only a request that arrives after the scale-down
//     wakes it, and that one at once.
//   - TargetUtilization 1.0: max_batch_size is already the model server's
//     concurrency limit (vLLM --max-num-seqs), so counting a full batch as
//     an instance's capacity is what the user configured.
//
// Missing data is not zero demand: when the DemandSource fails the tick is
// skipped and every count is held, and a gap in samples carries the last
// known demand forward. A loop that starts with no history (after a
// restart, or on winning the autoscaler lease back: what it remembered from
// its last term is stale, and wakes heard meanwhile are dropped) neither
// shrinks a deployment before it has seen a full stable window nor
// idles it out before IdleTimeout.
//
// Clamps are applied last: min_instances is always kept, even with no
// demand; max_instances caps the count; the reason says which applied.
// The user's GPU quota is not a clamp here: it spans a user's deployments,
// so the fleet enforces it when it starts instances.
package autoscaler
