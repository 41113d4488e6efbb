// Package nomad is thaw's production runtime: it runs instances as Nomad
// allocations and implements fleet.Runtime. It is the only package, with
// jobs/, that talks to Nomad.
//
// # Mapping
//
// Each deployment is one Nomad service job, jobs.JobID(deploy id), rendered
// by jobs.Renderer. Each instance is one task group of that job, named
// "i-<8 hex>", with count 1; the instance ID is "<deploy id>/<group>".
// Start adds a group and Stop removes it, each by registering the job
// again (in the background, coalesced: a burst of Starts is one write).
// Groups left untouched are updated in place by Nomad: their allocations
// are not restarted. The job is stopped (not purged) when its last group
// goes, and registered again by the next Start; Purge stops and purges it
// and deletes the deployment's Nomad Variable.
//
// Why groups and not the group count: Nomad cannot stop a chosen
// allocation and lower the count. Checked on Nomad 1.10.5 with a count-3
// group: `Jobs().Scale` down stops the allocation with the highest name
// index ([2]), whichever one thaw drained; `Allocations().Stop` stops the
// chosen allocation and Nomad places a replacement; both in a row stopped
// the chosen one and another, and placed a replacement. The fleet drains a
// specific instance before it stops it, so stopping any other one would
// cut requests in flight. With one group per instance, removing the group
// stops exactly its allocation. Scaling never starts a Nomad deployment
// (jobs set `update { max_parallel = 0 }`), so it is never "blocked due to
// active deployment".
//
// Groups have no reschedule policy (attempts 0): an allocation that fails
// (after the restarts of jobs' restart policy) stays failed, the runtime
// reports PhaseFailed with the cause from the task events, drops the group,
// and the fleet decides to start another (and counts crash loops).
//
// # Events
//
// The runtime follows Nomad's event stream (topics Allocation and
// Evaluation), resuming from the last index after a disconnect, and lists
// its jobs' allocations and evaluations on every (re)connect, after every
// write and every Config.ResyncInterval, so a missed event is caught up.
// Reports are applied idempotently (older allocation views are ignored by
// ModifyIndex):
//
//   - allocation running: PhaseRunning, Addr = host IP and value of the
//     group's "http" port;
//   - allocation failed, lost or complete without a Stop: PhaseFailed with
//     a reason; after a Stop: PhaseStopped (Stop returns then: GPUs free);
//   - evaluation with FailedTGAllocs[group]: PhasePending with the reason in
//     plain words (placementReason), e.g. `no node has 2 free H100-80GB
//     GPUs (Nomad: 1 node evaluated, 1 exhausted, "devices: no devices
//     match request")`. Nomad's blocked evaluation places the group when
//     capacity frees; the allocation events then report it running.
//
// # GPU time
//
// Reports carry Nomad's own times, for the meter (nanosecond precision, as
// Nomad stores them): Held is the allocation's CreateTime, when the plan
// that placed it reserved its GPUs on the node (an adopted allocation keeps
// it across thaw restarts); Released, on the final report, is when the
// allocation became terminal: its tasks' latest FinishedAt, else its
// ModifyTime (a task that never ran, a lost node). Released is zero when
// the runtime ends an instance before Nomad does (a replaced allocation, an
// allocation Nomad forgot, a purge whose allocations did not end in time);
// Ended then answers once Nomad has ended it. Ended (fleet.History) reads
// an instance's allocations from Nomad, so it answers for instances of a
// previous thaw run, until Nomad garbage-collects them. Nomad forgets a
// purged job's allocations at once, before they have stopped: Purge
// therefore stops the job, waits for its allocations to end, reports their
// Released, and only then purges.
//
// # Restarts
//
// Run first lists the thaw jobs in Nomad; their groups become orphans that
// the next Starts of the same deployment claim (running ones first), so a
// restarted thaw neither restarts nor duplicates running allocations.
// Orphans unclaimed after Config.AdoptGrace are stopped. Until that listing
// succeeds Start returns ErrNotReady (the fleet retries). After Run's
// context is done Stop does nothing: allocations outlive thaw.
//
// # Nomad unreachable
//
// Writes are retried with backoff (at most Config.RetryInterval apart);
// instances without an allocation report PhasePending with the error, and
// Err says what is wrong. Running allocations keep serving meanwhile.
// Live adds that to the status the deploy API shows.
//
// # ACLs
//
// With ACLs enabled, thaw's token needs: namespace capabilities list-jobs,
// read-job (jobs, allocations, evaluations, the event stream) and
// submit-job (register, stop, purge); node read (GPUs); variables list,
// read, write and destroy on the records (thaw/records/*), read, write and
// destroy on the name reservations (thaw/names/*), write and destroy on
// the HF tokens (nomad/jobs/thaw-*, see package jobs), and read and write
// on the replicas' leader election (thaw/leader, Lock). The
// model-server tasks read their token by their workload identity: no
// policy is attached to any job. A call Nomad refuses (403) returns a
// *PermissionError naming what it needs in a policy's words, e.g.
// `namespace capability "submit-job"`; while one stands, Live says so in
// every deployment's status instead of "Nomad is unreachable".
//
// # Deleted deployments
//
// Purger calls Purge for every deployment that leaves the store, and at
// start for the thaw jobs in Nomad whose deployment is gone (deleted while
// thaw was down), retrying until Nomad accepts.
package nomad
