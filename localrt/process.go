package localrt

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/vllm"
)

// waitDelay bounds how long a child's output is read after it exits, in case
// a process it started keeps its stdout or stderr open.
const waitDelay = 2 * time.Second

// simCommand returns the default Config.Command: `thaw sim`. The simulator
// takes none of vLLM's flags, so spec.ExtraArgs are not passed; neither is
// the GPU count, which only placement uses.
func simCommand(binary string, startup time.Duration, tps float64, extra []string) func(fleet.Spec, int, string) *exec.Cmd {
	return func(spec fleet.Spec, port int, _ string) *exec.Cmd {
		args := []string{"sim",
			"--port", strconv.Itoa(port),
			"--model", spec.Model,
			"--startup", startup.String(),
			"--tokens-per-second", strconv.FormatFloat(tps, 'g', -1, 64),
		}
		if spec.MaxBatchSize > 0 {
			args = append(args, "--max-num-seqs", strconv.Itoa(spec.MaxBatchSize))
		}
		return exec.Command(binary, append(args, extra...)...)
	}
}

// vllmCommand returns Config.Command of EngineVLLM: `vllm serve` as package
// vllm defines it, on 127.0.0.1:port, with the model-server environment of
// thaw's (passedEnv: HF_HOME, HF_HUB_OFFLINE, ...) and vLLM's settings for
// st.Device, its caches and temporary files in the instance's directory.
func vllmCommand(binary string, st vllm.Settings) func(fleet.Spec, int, string) *exec.Cmd {
	return func(spec fleet.Spec, port int, dir string) *exec.Cmd {
		vs := vllm.Spec{
			Repo: spec.Repo, Revision: spec.Revision, Model: spec.Model,
			MaxBatchSize: spec.MaxBatchSize, NumGPUs: spec.NumGPUs, ExtraArgs: spec.ExtraArgs,
		}
		cmd := exec.Command(binary, vllm.Args(vs, st.Device, "127.0.0.1", strconv.Itoa(port))...)
		st.Dir = dir
		// Later values win (exec.Cmd.Env): vLLM's settings over thaw's
		// environment; the runtime appends HF_TOKEN.
		cmd.Env = append(modelServerEnv(os.Environ(), ""), vllm.Env(st)...)
		return cmd
	}
}

// spawnLoop starts the placed instances until quit is closed.
//
// It runs locked to its OS thread for its whole life, and every child is
// forked from that thread. Children get Pdeathsig SIGKILL, which the kernel
// sends when the *thread* that forked them exits (golang/go#27505), not the
// process: forking from an arbitrary goroutine would kill a child whenever
// the Go runtime retired that thread. This thread lives until Run has seen
// every child exit; when spawnLoop returns without unlocking, the runtime
// terminates the thread, which is then harmless. If thaw dies, even by
// SIGKILL, the thread dies with it and the kernel kills the children.
func (r *Runtime) spawnLoop(quit <-chan struct{}) {
	runtime.LockOSThread()
	for {
		r.mu.Lock()
		for len(r.toSpawn) > 0 {
			inst := r.toSpawn[0]
			r.toSpawn = r.toSpawn[1:]
			r.spawnLocked(inst)
		}
		r.mu.Unlock()
		select {
		case <-r.spawnSig:
		case <-quit:
			return
		}
	}
}

// spawnLocked starts the process of a placed instance, which spawnLoop has
// just taken off toSpawn. Called with mu held, on the spawner's thread.
func (r *Runtime) spawnLocked(inst *instance) {
	fail := func(err error) {
		r.log.Warn("model server did not start", "instance", inst.id, "deploy", inst.spec.DeployID, "err", err)
		r.finishLocked(inst, fleet.PhaseFailed, "could not start model server: "+err.Error())
		r.placeLocked()
	}
	port, err := r.pickPortLocked()
	if err != nil {
		fail(err)
		return
	}
	inst.port = port
	dir, err := r.makeInstanceDir(inst.id)
	if err != nil {
		fail(err)
		return
	}
	inst.dir = dir
	cmd := r.cfg.Command(inst.spec, port, dir)
	if cmd == nil {
		fail(errors.New("no command"))
		return
	}
	if cmd.Dir == "" {
		// vLLM puts its working directory on a subprocess's sys.path:
		// start it where nothing else is.
		cmd.Dir = dir
	}
	if cmd.Env == nil {
		cmd.Env = modelServerEnv(os.Environ(), inst.spec.HFToken)
	} else if inst.spec.HFToken != "" {
		// The last value of a key wins (exec.Cmd.Env).
		cmd.Env = append(cmd.Env, "HF_TOKEN="+inst.spec.HFToken)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	log := r.log.With("instance", inst.id, "deploy", inst.spec.DeployID)
	inst.stderr = newLineLog(log, "stderr")
	cmd.Stdout = newLineLog(log, "stdout")
	cmd.Stderr = inst.stderr
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		fail(err)
		return
	}
	// Start returns once the exec has succeeded (the child reports a
	// failed exec through a pipe that the exec closes): the model server
	// runs, and holds its GPUs, from now. The wall clock only (Round(0)
	// drops the monotonic reading), as the state file keeps it.
	inst.held = time.Now().Round(0)
	inst.cmd = cmd
	inst.pid = cmd.Process.Pid
	inst.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	inst.state = stateRunning
	if st, err := procStartTime(inst.pid); err == nil {
		inst.startTime = st
	}
	r.writeStateLocked()
	log.Info("model server started", "addr", inst.addr, "pid", inst.pid, "gpu", inst.spec.GPU, "num_gpus", inst.spec.NumGPUs)
	r.emitLocked(inst, fleet.PhaseRunning, "")
	r.procs.Add(1)
	go r.wait(inst)
}

// wait waits for inst's process to exit, kills what it started and left
// behind (its process group), removes its directory, then reports it
// stopped (when asked to stop) or failed, and places pending instances on
// the GPUs it freed.
func (r *Runtime) wait(inst *instance) {
	defer r.procs.Done()
	if err := waitExited(inst.pid); err != nil {
		r.log.Warn("waiting for a model server", "instance", inst.id, "pid", inst.pid, "err", err)
	}
	// Exited: its GPUs are free from now (the workers it left in its
	// group are killed next, within the same instant).
	released := time.Now().Round(0)
	// The child is a zombie until Wait reaps it, so its PID, the ID of its
	// group, is not reused yet: a model server's workers (vLLM runs
	// several processes) cannot outlive it.
	syscall.Kill(-inst.pid, syscall.SIGKILL)
	err := inst.cmd.Wait()
	r.removeInstanceDir(inst.id, inst.dir)
	r.mu.Lock()
	defer r.mu.Unlock()
	inst.released = released
	if inst.stopping {
		r.log.Info("model server stopped", "instance", inst.id, "deploy", inst.spec.DeployID)
		r.finishLocked(inst, fleet.PhaseStopped, "")
	} else {
		reason := "model server exited: "
		if err != nil {
			reason += err.Error()
		} else {
			reason += "exit status 0"
		}
		if line := inst.stderr.last(); line != "" {
			reason += ": " + line
		}
		r.log.Warn("model server exited", "instance", inst.id, "deploy", inst.spec.DeployID,
			"reason", reason, "stderr", inst.stderr.tail())
		r.finishLocked(inst, fleet.PhaseFailed, reason)
	}
	r.writeEndedLocked()
	r.writeStateLocked()
	r.placeLocked()
}

// terminateLocked asks a running instance to exit: SIGTERM now, SIGKILL
// after StopGrace. Its wait goroutine reports the exit. Called with mu held.
func (r *Runtime) terminateLocked(inst *instance) {
	if inst.stopping {
		return
	}
	inst.stopping = true
	signalGroup(inst.pid, syscall.SIGTERM)
	inst.killer = time.AfterFunc(r.cfg.StopGrace, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !inst.gone {
			r.log.Warn("model server ignored SIGTERM; killing it", "instance", inst.id, "pid", inst.pid)
			signalGroup(inst.pid, syscall.SIGKILL)
		}
	})
}

// signalGroup sends sig to the process group that the child pid leads
// (Setpgid), so that processes it started get it too, and to the child
// itself in case it left its group.
//
// The caller knows that pid has not been reaped (the instance is not gone),
// so pid is not reused; its group may outlive it only through its own
// descendants.
func signalGroup(pid int, sig syscall.Signal) {
	syscall.Kill(-pid, sig)
	syscall.Kill(pid, sig)
}

// waitExited blocks until the child pid has exited, without reaping it
// (WNOWAIT): exec.Cmd.Wait does that afterwards.
func waitExited(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// writeStateLocked records the running children and a heartbeat (now) in
// the state file. Called with mu held, which orders the writes.
func (r *Runtime) writeStateLocked() {
	if r.statePath == "" {
		return
	}
	st := state{AliveAt: time.Now().Round(0)}
	for _, inst := range r.insts {
		if inst.state != stateRunning || inst.gone {
			continue
		}
		st.Children = append(st.Children, record{
			ID: inst.id, PID: inst.pid, Argv: inst.cmd.Args, StartTime: inst.startTime,
			DeployID: inst.spec.DeployID, Held: inst.held,
		})
	}
	if err := writeState(r.statePath, st); err != nil {
		r.log.Warn("recording model server PIDs", "err", err)
	}
}

// writeEndedLocked records the ended instances in the ended file, dropping
// those past the retention. Called with mu held, before the state file
// drops the instance that ended: a crash between the two leaves it in both,
// and recoverState keeps the end recorded.
func (r *Runtime) writeEndedLocked() {
	if r.endedPath == "" {
		return
	}
	if err := writeEnded(r.endedPath, r.pruneEndedLocked(time.Now())); err != nil {
		r.log.Warn("recording ended model servers", "err", err)
	}
}
