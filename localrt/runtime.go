package localrt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/vllm"
)

// Defaults of Config.
const (
	DefaultStartup         = 3 * time.Second
	DefaultTokensPerSecond = 50.0
	DefaultStopGrace       = 5 * time.Second
	DefaultHeartbeat       = time.Second
)

// eventBuffer is the size of the Events channel.
const eventBuffer = 1024

// ErrClosed is returned by Start once Run has begun to shut down.
var ErrClosed = errors.New("localrt: runtime is shut down")

// ErrAlreadyRun is returned by Run when the runtime has been run before.
var ErrAlreadyRun = errors.New("localrt: runtime already run")

// Engine is the model server a Runtime runs.
type Engine string

// Engines.
const (
	// EngineSim runs `thaw sim`, the simulator.
	EngineSim Engine = "sim"
	// EngineVLLM runs vLLM (Config.VLLMBinary), as package vllm defines.
	EngineVLLM Engine = "vllm"
)

// Config configures a Runtime. The zero value of each optional field means
// its default.
type Config struct {
	// Inventory is the simulated GPUs by type, e.g. {"A100-80GB": 8,
	// "H100-80GB": 8}. Instances of other types stay pending.
	Inventory map[string]int
	// Engine is the model server instances run. Default EngineSim.
	Engine Engine
	// Binary is the thaw executable to run `sim` with.
	// Default os.Executable().
	Binary string
	// VLLMBinary is the vllm executable of EngineVLLM (see
	// vllm.FindBinary); required for it.
	VLLMBinary string
	// VLLMDevice is what vLLM computes on. Default vllm.Detect(): GPUs
	// when the machine has one.
	VLLMDevice vllm.Device
	// VLLMKVCacheGiB is vLLM's KV cache on CPUs, in GiB. Default
	// vllm.DefaultKVCacheGiB.
	VLLMKVCacheGiB int
	// VLLMCacheDir holds the compile caches every vLLM instance shares
	// (vllm.Settings.CacheDir); empty: each instance's own directory, so
	// every start compiles.
	VLLMCacheDir string
	// Command, when set, builds the process of an instance that listens on
	// 127.0.0.1:port, instead of the engine's (tests use it to run
	// something else). dir is the instance's own directory, empty and
	// removed after the process exits; the process runs in it unless the
	// command sets Dir. Command is called with the runtime's lock held and
	// must not call the Runtime. The runtime then sets the command's
	// Stdout, Stderr, WaitDelay and SysProcAttr, and adds HF_TOKEN to its
	// Env (when Env is nil: the few variables of thaw's environment a
	// model server needs, see passedEnv).
	Command func(spec fleet.Spec, port int, dir string) *exec.Cmd
	// SimArgs are more flags for every `thaw sim` (e.g. --request-log).
	SimArgs []string
	// Ports are the loopback ports instances listen on, one each; ports
	// that this runtime's instances or other processes hold are skipped.
	// Default DefaultPorts.
	Ports PortRange
	// Startup is the simulator's startup delay, before it answers on its
	// port.
	// Default DefaultStartup; negative means none.
	Startup time.Duration
	// TokensPerSecond is the simulator's generation speed per request.
	// Default DefaultTokensPerSecond.
	TokensPerSecond float64
	// StateDir is the directory where the runtime records its children
	// (file localrt-pids.json: PIDs, start times, a heartbeat), so that the
	// next Run kills the orphans a crash left behind and closes the
	// instances whose end it did not see; records when the instances that
	// ended freed their GPUs (localrt-ended.json, a week, for Ended); and
	// keeps the instances' directories (instances/<id>). Run creates it.
	// Empty: no record, Ended knows only this run's instances, and the
	// instances' directories go to a temporary directory.
	StateDir string
	// Heartbeat is how often the state file records that the running
	// children are alive (a small file written and renamed). A thaw that
	// is killed takes its children with it; the next Run closes them at
	// the last heartbeat, so their GPU time is under-counted by at most
	// Heartbeat. Default DefaultHeartbeat.
	Heartbeat time.Duration
	// StopGrace is how long a stopping child has between SIGTERM and
	// SIGKILL. Default DefaultStopGrace.
	StopGrace time.Duration
	// Logger receives the runtime's logs, and the children's output at
	// debug level. Default slog.Default().
	Logger *slog.Logger
}

// instState is where an instance is inside the runtime.
type instState int

const (
	statePending instState = iota // in Runtime.pending, no GPUs
	statePlaced                   // in Runtime.toSpawn, GPUs reserved
	stateRunning                  // process started, GPUs reserved
)

// instance is one instance the runtime knows. Its fields are guarded by
// Runtime.mu, except the read-only ones set at Start.
type instance struct {
	id   string     // read-only
	spec fleet.Spec // read-only

	state  instState
	reason string // last pending reason reported
	port   int
	addr   string
	dir    string // its own directory, "" until spawned
	cmd    *exec.Cmd
	pid    int
	// startTime is the child's start time from /proc (0: unknown), so
	// that the state file tells it from a later process with its PID.
	startTime uint64
	// held is when the process started (exec succeeded): it holds its
	// GPUs from then; released is when it was seen to exit. Zero until
	// then.
	held, released time.Time
	stderr         *lineLog
	stopping       bool          // Stop or shutdown asked it to stop
	killer         *time.Timer   // sends SIGKILL after StopGrace
	gone           bool          // finished: resources released, last report sent
	done           chan struct{} // closed when gone
}

// Runtime runs model-server instances as child processes on this machine,
// on a simulated GPU inventory. It implements fleet.Runtime. Start and Stop
// are safe for concurrent use; instances start only while Run runs.
type Runtime struct {
	cfg       Config
	log       *slog.Logger
	total     map[string]int // Inventory; read-only
	statePath string         // "" for no state file
	endedPath string         // "" for no record of ended instances
	// nonce distinguishes this runtime's IDs from a previous run's: the
	// meter keys GPU time by instance ID across runs, so IDs must not
	// repeat (32 random bits).
	nonce  string
	events *fleet.EventQueue
	// instRoot holds the instances' own directories; set by Run before
	// the spawner starts.
	instRoot string
	spawnSig chan struct{}  // capacity 1: "toSpawn may be non-empty"
	procs    sync.WaitGroup // one per wait goroutine
	// recovered is closed once Run has read what a previous run recorded
	// (Ended waits for it).
	recovered chan struct{}

	// mu guards the fields below, the fields of every instance, and the
	// state file; it is held while a child is forked.
	mu       sync.Mutex
	insts    map[string]*instance // every instance not yet gone
	ended    map[string]ended     // instances that ran and are gone, by ID
	pending  []*instance          // pending instances, in start order
	toSpawn  []*instance          // placed instances waiting for the spawner
	used     map[string]int       // GPUs reserved, by type
	ports    map[int]bool         // ports given to live instances
	nextPort int                  // offset in Config.Ports of the next port to try
	seq      uint64               // Starts so far, numbering the IDs
	started  bool                 // Run was called
	closing  bool                 // Run is shutting down: no more starts
}

var (
	_ fleet.Runtime = (*Runtime)(nil)
	_ fleet.History = (*Runtime)(nil)
)

// New validates cfg, fills in defaults and returns a Runtime. It starts no
// goroutine and no process: see Run.
// withDefaults checks cfg and fills in its defaults, including the command
// that starts a model server for the engine.
func (cfg Config) withDefaults() (Config, error) {
	for gpu, n := range cfg.Inventory {
		if n < 0 {
			return cfg, fmt.Errorf("localrt: inventory: %d %s GPUs", n, gpu)
		}
	}
	if cfg.TokensPerSecond < 0 {
		return cfg, fmt.Errorf("localrt: %v tokens per second", cfg.TokensPerSecond)
	}
	if cfg.Ports == (PortRange{}) {
		cfg.Ports = DefaultPorts
	}
	if err := cfg.Ports.validate(); err != nil {
		return cfg, fmt.Errorf("localrt: %w", err)
	}
	switch {
	case cfg.Startup == 0:
		cfg.Startup = DefaultStartup
	case cfg.Startup < 0:
		cfg.Startup = 0
	}
	if cfg.TokensPerSecond == 0 {
		cfg.TokensPerSecond = DefaultTokensPerSecond
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch cfg.Engine {
	case "":
		cfg.Engine = EngineSim
	case EngineSim, EngineVLLM:
	default:
		return cfg, fmt.Errorf("localrt: engine %q, want %q or %q", cfg.Engine, EngineSim, EngineVLLM)
	}
	if cfg.VLLMKVCacheGiB < 0 {
		return cfg, fmt.Errorf("localrt: %d GiB of KV cache", cfg.VLLMKVCacheGiB)
	}
	if cfg.VLLMDevice == "" {
		cfg.VLLMDevice = vllm.Detect()
	}
	if _, err := vllm.ParseDevice(string(cfg.VLLMDevice)); err != nil {
		return cfg, fmt.Errorf("localrt: %w", err)
	}
	if cfg.Command == nil && cfg.Engine == EngineVLLM {
		if cfg.VLLMBinary == "" {
			return cfg, errors.New("localrt: engine vllm needs the vllm executable (Config.VLLMBinary)")
		}
		cfg.Command = vllmCommand(cfg.VLLMBinary, vllm.Settings{Device: cfg.VLLMDevice, KVCacheGiB: cfg.VLLMKVCacheGiB, CacheDir: cfg.VLLMCacheDir})
	}
	if cfg.Command == nil {
		if cfg.Binary == "" {
			exe, err := os.Executable()
			if err != nil {
				return cfg, fmt.Errorf("localrt: finding the thaw binary: %w", err)
			}
			cfg.Binary = exe
		}
		cfg.Command = simCommand(cfg.Binary, cfg.Startup, cfg.TokensPerSecond, cfg.SimArgs)
	}
	return cfg, nil
}

func New(cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var nonce [4]byte
	rand.Read(nonce[:])
	r := &Runtime{
		cfg:       cfg,
		log:       cfg.Logger,
		total:     maps.Clone(cfg.Inventory),
		nonce:     hex.EncodeToString(nonce[:]),
		events:    fleet.NewEventQueue(eventBuffer),
		spawnSig:  make(chan struct{}, 1),
		recovered: make(chan struct{}),
		insts:     map[string]*instance{},
		ended:     map[string]ended{},
		used:      map[string]int{},
		ports:     map[int]bool{},
	}
	if r.total == nil {
		r.total = map[string]int{}
	}
	if cfg.StateDir != "" {
		r.statePath = filepath.Join(cfg.StateDir, stateFileName)
		r.endedPath = filepath.Join(cfg.StateDir, endedFileName)
	}
	return r, nil
}

// Events delivers a report for every phase change of every instance, in
// order. The channel is never closed.
func (r *Runtime) Events() <-chan fleet.Instance { return r.events.Events() }

// GPUs reports free and total GPUs by type of the inventory.
func (r *Runtime) GPUs() map[string]GPUCount {
	r.mu.Lock()
	defer r.mu.Unlock()
	return counts(r.total, r.used)
}

// Start asks for one more instance of spec and returns its ID at once. The
// instance is reported PhaseRunning once its process has started, or
// PhasePending with a reason while its GPUs are not free; pending instances
// are placed in start order (see plan). Start fails only on a negative
// spec.NumGPUs or after shutdown.
func (r *Runtime) Start(ctx context.Context, spec fleet.Spec) (string, error) {
	if spec.NumGPUs < 0 {
		return "", fmt.Errorf("localrt: %d GPUs", spec.NumGPUs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return "", ErrClosed
	}
	r.seq++
	name := spec.DeployID
	if name == "" {
		name = "instance"
	}
	inst := &instance{
		id:   fmt.Sprintf("%s-%s-%d", name, r.nonce, r.seq),
		spec: spec,
		done: make(chan struct{}),
	}
	r.insts[inst.id] = inst
	r.pending = append(r.pending, inst)
	r.log.Info("instance requested", "instance", inst.id, "deploy", spec.DeployID,
		"model", spec.Model, "gpu", spec.GPU, "num_gpus", spec.NumGPUs)
	r.placeLocked()
	return inst.id, nil
}

// Stop stops an instance: a pending one is dropped at once; a running one
// gets SIGTERM, then SIGKILL after StopGrace, and Stop returns once it has
// exited and its GPUs are free (or when ctx is done; the stop goes on).
// Stopping an unknown or stopped instance does nothing.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	r.mu.Lock()
	inst := r.insts[id]
	if inst == nil {
		r.mu.Unlock()
		return nil
	}
	if inst.state == stateRunning {
		r.terminateLocked(inst)
	} else {
		r.finishLocked(inst, fleet.PhaseStopped, "")
		r.placeLocked()
	}
	r.mu.Unlock()
	select {
	case <-inst.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("localrt: stopping %s: %w", id, ctx.Err())
	}
}

// Run kills the orphans a previous run recorded in StateDir and closes the
// instances whose end that run did not see, then starts the instances
// placed by Start until ctx is done, recording a heartbeat every
// Heartbeat while children run. Then it stops every instance (SIGTERM,
// then SIGKILL after StopGrace), waits for the processes to exit, records
// their ends and returns nil.
func (r *Runtime) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return ErrAlreadyRun
	}
	r.started = true
	r.mu.Unlock()

	// Before the spawner starts: the record must not yet name our own
	// children.
	if r.statePath != "" {
		if err := os.MkdirAll(r.cfg.StateDir, 0o755); err != nil {
			r.log.Warn("creating the state directory", "err", err)
		}
		r.recover()
	}
	close(r.recovered)
	root, err := openInstancesRoot(r.cfg.StateDir)
	if err != nil {
		r.log.Warn("instances' directories", "err", err)
	}
	r.instRoot = root

	pumpCtx, stopPump := context.WithCancel(context.Background())
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		r.events.Pump(pumpCtx)
	}()
	quit := make(chan struct{})
	spawnerDone := make(chan struct{})
	go func() {
		defer close(spawnerDone)
		r.spawnLoop(quit)
	}()
	heartbeatDone := make(chan struct{})
	go func() {
		defer close(heartbeatDone)
		r.heartbeat(quit)
	}()

	<-ctx.Done()

	r.mu.Lock()
	r.closing = true
	var dones []chan struct{}
	for _, inst := range r.insts {
		dones = append(dones, inst.done)
		if inst.state == stateRunning {
			r.terminateLocked(inst)
		} else {
			r.finishLocked(inst, fleet.PhaseStopped, "")
		}
	}
	r.mu.Unlock()
	for _, d := range dones {
		<-d
	}
	close(quit)
	<-spawnerDone
	<-heartbeatDone
	r.procs.Wait()
	r.mu.Lock()
	r.writeStateLocked() // no child left; the ended file keeps their ends
	r.mu.Unlock()
	if root != "" {
		if err := os.RemoveAll(root); err != nil {
			r.log.Warn("removing the instances' directories", "err", err)
		}
	}
	stopPump()
	<-pumpDone
	r.events.Flush()
	return nil
}
