// Package localrt is the local runtime of `thaw dev`: it runs each model
// server instance as a child process of thaw (by default `thaw sim`, the
// bundled simulator; with EngineVLLM a real vLLM, its command line and
// settings from package vllm) on a GPU inventory that it simulates. It
// implements fleet.Runtime.
//
// It owns:
//   - placement: the inventory, the reservation of GPUs, and the FIFO queue
//     of pending instances with the reason each one waits (inventory.go, a
//     pure function with table tests);
//   - the children: their ports (from Config.Ports, a range the runtime
//     owns; never one the kernel picks), environment (HF_TOKEN, never logged),
//     output (logged at debug level; the last stderr lines explain a
//     failure), own directory (working directory, caches, temporary files;
//     removed when it exits), stop (SIGTERM to its process group, then
//     SIGKILL; once it has exited, whatever it left in its group is killed,
//     so vLLM's worker processes go with it) and exit (reported
//     PhaseFailed; replacing it is the fleet's decision);
//   - orphans: children die with thaw even on SIGKILL (Pdeathsig, forked
//     from one OS thread that lives as long as Run), and their PIDs are
//     recorded in Config.StateDir so that the next Run kills any left over;
//   - GPU time (history.go): every report from PhaseRunning on carries Held,
//     the wall-clock time at which the model server's exec succeeded
//     (spawnLocked, right after exec.Cmd.Start returns; nanoseconds); the
//     last report carries Released, when waitid saw the process exit
//     (wait). A second file in Config.StateDir keeps, for a week (at most
//     1000), when ended instances freed their GPUs, and Ended
//     (fleet.History) answers from it after a restart. Instances are not
//     adopted across restarts, so an instance's reports all come from one
//     run. A thaw that is killed cannot see its children's end: a
//     heartbeat (Config.Heartbeat, 1 s) rewrites the small record of
//     running children while they run, and the next Run closes a child
//     found dead at the last heartbeat (at most one heartbeat early: GPU
//     time is under-counted, never invented) and one found alive, which it
//     kills, at the kill.
//
// Placement is FIFO per GPU type without skipping: an instance waits until
// the instances of its GPU type started before it are placed, so a large
// request is not starved by small ones; GPU types do not block each other,
// and a request that can never fit (unknown type, more GPUs than the
// inventory has) blocks nothing.
//
// Reports go out on Events through an unbounded queue and a pump goroutine,
// so the runtime never blocks on a slow reader while it holds its lock.
//
// Usage:
//
//	rt, err := localrt.New(localrt.Config{
//		Inventory: map[string]int{"A100-80GB": 8},
//		StateDir:  dataDir,
//	})
//	// run rt.Run(ctx) in the errgroup; hand rt to the fleet as its
//	// fleet.Runtime; rt.GPUs() for status pages and metrics.
package localrt
