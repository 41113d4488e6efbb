package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/lease"
	"github.com/thawhq/thaw/localrt"
)

// devConfig is `thaw dev`'s configuration, from flags and environment.
type devConfig struct {
	addr        string
	dataDir     string
	idleTimeout time.Duration
	holdTimeout time.Duration
	gpus        map[string]int
	gpuQuota    int
	simStartup  time.Duration
	simTPS      float64
	simReqLog   string
	ports       localrt.PortRange
	users       map[string]string // user -> token
	redis       redisFlags
	maxHeld     int
	pprofAddr   string
	// engine is the runtime's engine settings (--engine, --vllm-*).
	engine localrt.Config
	vllm   vllmFlags
	edge   edgeFlags
	proc   processFlags
	meter  meterFlags
}

func (c *devConfig) processConfig() processConfig {
	return processConfig{Service: "thaw-dev", Flags: c.proc, Redis: c.redis, EmbeddedRedis: true}
}

func parseDevFlags(args []string, stderr io.Writer) (*devConfig, error) {
	c := &devConfig{users: map[string]string{}}
	fs := newFlags("dev", "Usage: thaw dev [flags]\n\n"+
		"Runs the whole product in one process: deploy API, OpenAI-compatible endpoint,\n"+
		"activator, autoscaler, embedded Redis, and a local runtime that starts\n"+
		"model servers (the simulator, or vLLM with --engine vllm) on a simulated GPU\n"+
		"inventory.\n\n"+
		"Environment: THAW_DEV_TOKEN is the API token of user \"dev\"; when unset one is\n"+
		"generated, printed and kept in the data dir.\n\nFlags:\n", stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "`address` to serve the API and inference endpoints on")
	fs.StringVar(&c.dataDir, "data-dir", ".thaw", "`directory` where deployments and the dev token persist across restarts")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 5*time.Minute, "scale a deployment to min_instances after this long without traffic")
	fs.DurationVar(&c.holdTimeout, "hold-timeout", 10*time.Minute, "how long a request may wait for capacity before it gets 503")
	gpus := fs.String("gpus", "A100-80GB:8,H100-80GB:8", "simulated GPU `inventory`, TYPE:COUNT,...; instances that do not fit stay pending, with a reason")
	fs.IntVar(&c.gpuQuota, "gpu-quota", 4, "GPUs one user may run at once (0: no quota)")
	engine := fs.String("engine", string(localrt.EngineSim), "model server instances run: sim (the bundled simulator) or vllm (vLLM, see --vllm-bin)")
	c.vllm.registerDev(fs)
	fs.DurationVar(&c.simStartup, "sim-startup", 3*time.Second, "the simulator's startup delay, standing in for loading weights")
	fs.Float64Var(&c.simTPS, "sim-tokens-per-second", 50, "the simulator's generation speed per request")
	c.ports = localrt.DefaultPorts
	fs.Func("instance-ports", "`range` FIRST-LAST of loopback ports the model servers listen on, one each; ports in use are skipped (default "+localrt.DefaultPorts.String()+")", func(s string) (err error) {
		c.ports, err = localrt.ParsePortRange(s)
		return err
	})
	fs.StringVar(&c.simReqLog, "sim-request-log", "", "every simulator appends a JSON line per inference request it receives (headers, whether it was cancelled) to `file`; for tests")
	fs.Func("user", "extra user as `name=token` (repeatable), to try multi-tenant behaviour", func(s string) error {
		name, tok, ok := strings.Cut(s, "=")
		if !ok || name == "" || tok == "" || strings.Contains(name, "/") {
			return errors.New("want name=token, name without '/'")
		}
		c.users[name] = tok
		return nil
	})
	c.redis.register(fs, "a Redis to share demand through; empty runs an embedded one (loopback, cleartext)")
	fs.IntVar(&c.maxHeld, "max-held", 10000, "requests held per deployment before new ones get 429")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "`host:port` to serve Go's /debug/pprof on (keep it on loopback); empty: off")
	c.edge.register(fs)
	c.meter.register(fs, "<data-dir>/usage.db (SQLite)")
	c.proc.register(fs, defaultMetricsAddr)
	if err := parseFlagsOnly(fs, args); err != nil {
		return nil, err
	}
	var err error
	if c.gpus, err = parseGPUs(*gpus); err != nil {
		return nil, fmt.Errorf("--gpus: %w", err)
	}
	if c.engine, err = c.vllm.localrt(*engine, thawExecutable(), c.dataDir); err != nil {
		return nil, err
	}
	if err := c.proc.parseLevel(); err != nil {
		return nil, err
	}
	if c.idleTimeout <= 0 || c.holdTimeout <= 0 || c.simStartup < 0 || c.simTPS <= 0 || c.gpuQuota < 0 || c.maxHeld < 1 {
		return nil, errors.New("--idle-timeout, --hold-timeout and --sim-tokens-per-second must be positive; --sim-startup and --gpu-quota not negative")
	}
	if _, ok := c.users["dev"]; ok {
		return nil, errors.New("--user dev=...: user dev's token comes from THAW_DEV_TOKEN")
	}
	return c, nil
}

// parseGPUs parses "A100-80GB:8,H100-80GB:8".
func parseGPUs(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		typ, n, ok := strings.Cut(part, ":")
		count, err := strconv.Atoi(n)
		if !ok || typ == "" || err != nil || count < 0 {
			return nil, fmt.Errorf("%q: want TYPE:COUNT", part)
		}
		out[typ] += count
	}
	return out, nil
}

// devToken returns user dev's token: THAW_DEV_TOKEN, else the one kept in the
// data dir, else a new one (saved there).
func devToken(dataDir string) (tok string, generated bool, err error) {
	if t := os.Getenv("THAW_DEV_TOKEN"); t != "" {
		return t, false, nil
	}
	path := filepath.Join(dataDir, "dev-token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), false, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	tok = "thaw_" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("save dev token: %w", err)
	}
	return tok, true, nil
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, p, err := parseAndStart(ctx, args, stderr, parseDevFlags)
	if err != nil {
		return err
	}
	defer p.close()
	tok, generated, err := prepareDataDir(cfg)
	if err != nil {
		return err
	}
	store, err := deploy.OpenStore(filepath.Join(cfg.dataDir, "deployments.json"))
	if err != nil {
		return err
	}
	simStartup := cfg.simStartup
	if simStartup == 0 {
		simStartup = -1 // localrt: negative means none, zero means default
	}
	rcfg := cfg.engine
	rcfg.Inventory, rcfg.Startup, rcfg.TokensPerSecond = cfg.gpus, simStartup, cfg.simTPS
	rcfg.StateDir, rcfg.Logger, rcfg.SimArgs, rcfg.Ports = cfg.dataDir, p.Log, simArgs(cfg.simReqLog), cfg.ports
	rt, err := localrt.New(rcfg)
	if err != nil {
		return err
	}
	id := replicaID()
	cp, err := newControlPlane(ctx, p, controlPlaneConfig{
		Addr: cfg.addr, Store: store,
		// One process: it leads from the start, and its one term runs
		// the fleet over the local runtime (which runs beside it).
		NewRuntime: func() (termRuntime, error) { return termRuntime{Runtime: rt}, nil },
		Inventory:  rt, Replica: id, Locker: lease.Solo(id),
		Users:    auth.NewUsers(cfg.users),
		GPUQuota: cfg.gpuQuota,
		// Probing loopback every 2ms costs a refused connect per probe
		// while a simulator loads, and keeps wake-to-serve to a few ms.
		ProbeInterval: 2 * time.Millisecond,
		PprofAddr:     cfg.pprofAddr,
		IdleTimeout:   cfg.idleTimeout, HoldTimeout: cfg.holdTimeout, MaxHeld: cfg.maxHeld,
		Edge: cfg.edge, Listen: cfg.proc.listen,
		Meter: cfg.meter, DataDir: cfg.dataDir, History: rt,
	})
	if err != nil {
		return err
	}
	banner := func(w io.Writer) {
		base := cp.URL()
		printServing(w, "thaw dev", base)
		if cfg.engine.Engine == localrt.EngineVLLM {
			fmt.Fprintf(w, "  engine: vLLM %s on %s\n", cfg.engine.VLLMBinary, cfg.engine.VLLMDevice)
		}
		if generated {
			fmt.Fprintf(w, "  token of user dev (new, kept in %s): %s\n", filepath.Join(cfg.dataDir, "dev-token"), tok)
		} else {
			fmt.Fprintf(w, "  token of user dev: %s\n", tok)
		}
		fmt.Fprintf(w, "  export THAW_TOKEN=%s THAW_ADDR=%s\n", tok, base)
	}
	return p.serve(ctx, stdout, "thaw dev", banner, rt.Run, cp.Run)
}

// prepareDataDir creates the data dir, finds user dev's token (see
// devToken) and writes the users file that activator replicas (thaw
// activator --users-file) read, as token hashes.
func prepareDataDir(cfg *devConfig) (tok string, generated bool, err error) {
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("data dir: %w", err)
	}
	if tok, generated, err = devToken(cfg.dataDir); err != nil {
		return "", false, err
	}
	cfg.users["dev"] = tok
	if err := writeUsersFile(filepath.Join(cfg.dataDir, "users"), cfg.users); err != nil {
		return "", false, err
	}
	return tok, generated, nil
}

// writeUsersFile writes users (name -> token) as a users file of token
// hashes (auth.ParseUsers's format).
func writeUsersFile(path string, users map[string]string) error {
	var b strings.Builder
	b.WriteString("# thaw users: <name> sha256:<hex of the token's SHA-256>; written by thaw dev\n")
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", n, auth.HashToken(users[n]))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	return nil
}

// simArgs are the extra flags of every simulator thaw dev starts.
func simArgs(requestLog string) []string {
	if requestLog == "" {
		return nil
	}
	abs, err := filepath.Abs(requestLog)
	if err != nil {
		abs = requestLog
	}
	return []string{"--request-log", abs}
}
