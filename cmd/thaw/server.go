package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/jobs"
	"github.com/thawhq/thaw/nomad"
)

// jobsConfigFile is the operator's job template overrides in --jobs-dir.
const jobsConfigFile = "jobs.json"

// serverConfig is `thaw server`'s configuration, from flags and environment.
type serverConfig struct {
	addr        string
	nomadAddr   string
	nomadToken  string
	redis       redisFlags
	engine      jobs.Engine
	jobsDir     string
	dataDir     string
	storeKind   string
	usersFile   string
	idleTimeout time.Duration
	holdTimeout time.Duration
	gpuQuota    int
	maxHeld     int
	adoptGrace  time.Duration
	simStartup  time.Duration
	simTPS      float64
	pprofAddr   string
	lockPath    string
	lockTTL     time.Duration
	lockDelay   time.Duration
	vllm        vllmFlags
	hfCache     string
	// set are the flags given, by name: those of vLLM override jobs.json.
	set   map[string]bool
	edge  edgeFlags
	proc  processFlags
	meter meterFlags
}

func parseServerFlags(args []string, stderr io.Writer) (*serverConfig, error) {
	c := &serverConfig{}
	fs := newFlags("server", "Usage: thaw server --redis-addr HOST:PORT [flags]\n\n"+
		"Runs thaw's production control plane: the deploy API and the OpenAI-compatible\n"+
		"endpoint, with every deployment a Nomad job and every instance a GPU allocation.\n\n"+
		"Users come from --users-file, which the operator manages: one line per user,\n"+
		"`<name> sha256:<hex>`, the hex being the SHA-256 of the user's token, e.g.\n"+
		"  echo \"alice sha256:$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1)\" >> users\n"+
		"Tokens are never stored in clear. Changes apply within a second, or at once\n"+
		"on SIGHUP; a file that does not parse or lists no user is logged and ignored.\n\n"+
		"Deployments (with their HF tokens) are kept in Nomad Variables (thaw/records/<id>),\n"+
		"or with --store file in <data-dir>/deployments.json (mode 0600).\n\n"+
		"Environment: NOMAD_ADDR and NOMAD_TOKEN are the defaults of --nomad-addr and\n"+
		"--nomad-token. The Nomad client reads Nomad's other settings as the nomad CLI\n"+
		"does: NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,\n"+
		"NOMAD_TLS_SERVER_NAME and NOMAD_SKIP_VERIFY for TLS (an https:// address),\n"+
		"NOMAD_REGION and NOMAD_NAMESPACE (jobs.json's region and namespace win).\n"+
		redisPasswordEnv+" is the default of --redis-password.\n\nFlags:\n", stderr)
	defNomad := os.Getenv("NOMAD_ADDR")
	if defNomad == "" {
		defNomad = "http://127.0.0.1:4646"
	}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "`address` to serve the API and inference endpoints on")
	fs.StringVar(&c.nomadAddr, "nomad-addr", defNomad, "Nomad HTTP API `URL` (default $NOMAD_ADDR, else http://127.0.0.1:4646)")
	fs.StringVar(&c.nomadToken, "nomad-token", os.Getenv("NOMAD_TOKEN"), "Nomad ACL `token` (default $NOMAD_TOKEN)")
	c.redis.register(fs, "the Redis holding demand and wake signals (required)")
	engine := fs.String("engine", string(jobs.EngineVLLM), "model server the jobs run: vllm (docker, GPUs), vllm-exec (raw_exec, the vLLM of --vllm-bin installed on the clients) or sim (raw_exec, the simulator)")
	fs.StringVar(&c.jobsDir, "jobs-dir", "", "`directory` with the operator's job overrides, "+jobsConfigFile+" (see the jobs package)")
	fs.StringVar(&c.dataDir, "data-dir", ".thaw-server", "`directory` for the users file and, with --store file, the deployments")
	fs.StringVar(&c.storeKind, "store", "nomad", "where deployments persist: nomad (Nomad Variables under thaw/records/, replicated by Nomad) or file (<data-dir>/deployments.json)")
	fs.StringVar(&c.usersFile, "users-file", "", "users and token hashes `file` (default <data-dir>/users)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 5*time.Minute, "scale a deployment to min_instances after this long without traffic")
	fs.DurationVar(&c.holdTimeout, "hold-timeout", 10*time.Minute, "how long a request may wait for capacity before it gets 503")
	fs.IntVar(&c.gpuQuota, "gpu-quota", 0, "GPUs one user may run at once (0: no quota)")
	fs.IntVar(&c.maxHeld, "max-held", 10000, "requests held per deployment before new ones get 429")
	fs.DurationVar(&c.adoptGrace, "adopt-grace", nomad.DefaultAdoptGrace, "after a restart, how long allocations found in Nomad wait to be adopted before they are stopped")
	fs.DurationVar(&c.simStartup, "sim-startup", 3*time.Second, "with --engine sim: the simulator's startup delay")
	fs.Float64Var(&c.simTPS, "sim-tokens-per-second", 50, "with --engine sim: the simulator's generation speed per request")
	fs.StringVar(&c.lockPath, "lock-path", nomad.DefaultLockPath, "Nomad Variable `path` the replicas elect their leader on (Nomad's Variables lock); replicas of one control plane share it")
	fs.DurationVar(&c.lockTTL, "lock-ttl", nomad.DefaultLockTTL, "the leader's lock lease (Nomad's minimum is 10s): the leader renews it every quarter and stops leading when a renewal has not succeeded for this long; Nomad frees the lock of a leader that died 2 x this after its last renewal")
	fs.DurationVar(&c.lockDelay, "lock-delay", nomad.DefaultLockDelay, "after Nomad frees a dead leader's lock, how long before another replica may take it")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "`host:port` to serve Go's /debug/pprof on (keep it on loopback); empty: off")
	c.vllm.registerServer(fs, &c.hfCache)
	c.edge.register(fs)
	c.meter.register(fs, "<data-dir>/usage.db (SQLite; replicas sharing a ledger need PostgreSQL)")
	c.proc.register(fs, defaultMetricsAddr)
	if err := parseFlagsOnly(fs, args); err != nil {
		return nil, err
	}
	c.set = setFlags(fs)
	c.engine = jobs.Engine(*engine)
	switch {
	case !slices.Contains(jobs.Engines, c.engine):
		return nil, fmt.Errorf("--engine %q: want one of %q", *engine, jobs.Engines)
	case c.storeKind != "nomad" && c.storeKind != "file":
		return nil, fmt.Errorf("--store %q: want nomad or file", c.storeKind)
	case c.redis.addr == "":
		return nil, errors.New("--redis-addr is required: thaw server shares demand through a real Redis")
	case c.nomadAddr == "":
		return nil, errors.New("--nomad-addr is empty")
	case c.idleTimeout <= 0 || c.holdTimeout <= 0 || c.adoptGrace <= 0 || c.simTPS <= 0:
		return nil, errors.New("--idle-timeout, --hold-timeout, --adopt-grace and --sim-tokens-per-second must be positive")
	case c.gpuQuota < 0 || c.maxHeld < 1 || c.simStartup < 0:
		return nil, errors.New("--gpu-quota and --sim-startup must not be negative, --max-held at least 1")
	}
	if err := c.proc.parseLevel(); err != nil {
		return nil, err
	}
	if c.usersFile == "" {
		c.usersFile = filepath.Join(c.dataDir, "users")
	}
	return c, nil
}

// loadJobsConfig reads <jobs-dir>/jobs.json; no --jobs-dir means defaults.
func loadJobsConfig(dir string) (jobs.Config, error) {
	if dir == "" {
		return jobs.Config{}, nil
	}
	return jobs.LoadConfig(filepath.Join(dir, jobsConfigFile))
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, p, err := parseAndStart(ctx, args, stderr, parseServerFlags)
	if err != nil {
		return err
	}
	defer p.close()
	n, err := newNomad(ctx, cfg, p.Log)
	if err != nil {
		return err
	}
	replica := replicaID()
	// The state file lets this replica, restarted after a crash, resume
	// its hold at once instead of waiting out its own dead lock.
	lock, err := nomad.NewLock(n.client, nomad.LockConfig{Path: cfg.lockPath, ID: replica,
		TTL: cfg.lockTTL, Delay: cfg.lockDelay, Namespace: n.namespace,
		StateFile: filepath.Join(cfg.dataDir, "leader-lock")})
	if err != nil {
		return err
	}
	var term atomic.Pointer[nomad.Runtime] // the running term's runtime
	cp, err := newControlPlane(ctx, p, controlPlaneConfig{
		Addr: cfg.addr, Store: n.store, Replica: replica, Locker: lock, Users: p.Users,
		NewRuntime: func() (termRuntime, error) {
			rt, err := n.newRuntime()
			if err != nil {
				return termRuntime{}, err
			}
			purger, err := nomad.NewPurger(nomad.PurgerConfig{Store: n.store, Runtime: rt, Logger: p.Log})
			if err != nil {
				return termRuntime{}, err
			}
			term.Store(rt)
			return termRuntime{Runtime: rt,
				Live: func(l api.Live) api.Live { return nomad.Live{Fleet: l, Runtime: rt} },
				Runs: []func(context.Context) error{rt.Run, purger.Run},
			}, nil
		},
		Inventory: n.reads, History: n.reads, TakeOver: true,
		GPUQuota: cfg.gpuQuota, IdleTimeout: cfg.idleTimeout, HoldTimeout: cfg.holdTimeout,
		MaxHeld: cfg.maxHeld, PprofAddr: cfg.pprofAddr,
		Health: func() map[string]string { return nomadHealth(term.Load()) },
		Edge:   cfg.edge, Listen: cfg.proc.listen,
		Meter: cfg.meter, DataDir: cfg.dataDir,
	})
	if err != nil {
		return err
	}
	banner := func(w io.Writer) {
		printServing(w, "thaw server", cp.URL())
		fmt.Fprintf(w, "  nomad: %s (engine %s)  redis: %s  users: %s\n", cfg.nomadAddr, cfg.engine, cfg.redis.redacted(), cfg.usersFile)
	}
	return p.serve(ctx, stdout, "thaw server", banner, cp.Run, n.store.Run, p.watchUsers)
}

// nomadHealth is GET /healthz's "nomad" field: what the leader's runtime
// says of Nomad ("ok", "unreachable" or "refused"); nothing on a follower,
// which does not talk to Nomad but for the lock and the store.
func nomadHealth(rt *nomad.Runtime) map[string]string {
	if rt == nil {
		return nil
	}
	if err := rt.Err(); err != nil {
		// The detail (address, OS error, the grant the token lacks) is
		// in the log: /healthz is public.
		if _, refused := errors.AsType[*nomad.PermissionError](err); refused {
			return map[string]string{"nomad": "refused"}
		}
		return map[string]string{"nomad": "unreachable"}
	}
	return map[string]string{"nomad": "ok"}
}

// nomadParts is what thaw server keeps of Nomad: the client, the
// deployment store (in Nomad Variables, or with --store file in the data
// dir), a runtime that only reads (GPUs, ended instances) and the maker of
// each term's runtime.
type nomadParts struct {
	client    *nomadapi.Client
	namespace string
	store     *deploy.Store
	reads     *nomad.Runtime
	// newRuntime makes a term's runtime; a runtime runs once.
	newRuntime func() (*nomad.Runtime, error)
}

// newNomad connects thaw server to Nomad.
func newNomad(ctx context.Context, cfg *serverConfig, log *slog.Logger) (*nomadParts, error) {
	jcfg, err := loadJobsConfig(cfg.jobsDir)
	if err != nil {
		return nil, err
	}
	if err := cfg.vllm.applyServer(&jcfg, cfg.set, cfg.hfCache, cfg.engine); err != nil {
		return nil, err
	}
	renderer, err := jobs.New(jcfg)
	if err != nil {
		return nil, err
	}
	nc, err := nomadapi.NewClient(nomadClientConfig(cfg.nomadAddr, cfg.nomadToken, jcfg.Namespace, jcfg.Region))
	if err != nil {
		return nil, fmt.Errorf("nomad client: %w", err)
	}
	n := &nomadParts{client: nc, namespace: jcfg.Namespace}
	n.newRuntime = func() (*nomad.Runtime, error) {
		return nomad.New(nomad.Config{
			Client: nc, Renderer: renderer, Engine: cfg.engine,
			SimStartup: cfg.simStartup, SimTokensPerSecond: cfg.simTPS,
			AdoptGrace: cfg.adoptGrace, Logger: log,
		})
	}
	if n.reads, err = n.newRuntime(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	open := func() (*deploy.Store, error) {
		return deploy.OpenStore(filepath.Join(cfg.dataDir, "deployments.json"))
	}
	if cfg.storeKind == "nomad" {
		// Shared by every replica: checked writes, and Store.Run follows
		// the others' changes.
		open = func() (*deploy.Store, error) {
			return deploy.NewSharedStore(nomad.VariableStore{Client: nc, Namespace: jcfg.Namespace}, log)
		}
	}
	if n.store, err = openStoreRetrying(ctx, open, log); err != nil {
		return nil, err
	}
	return n, nil
}

// nomadClientConfig is the Nomad client's configuration: Nomad's own
// environment, read as the nomad CLI reads it (TLS from NOMAD_CACERT,
// NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME
// and NOMAD_SKIP_VERIFY; NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_HTTP_AUTH),
// under the address and token of the flags and jobs.json's namespace and
// region when set.
func nomadClientConfig(addr, token, namespace, region string) *nomadapi.Config {
	c := nomadapi.DefaultConfig()
	c.Address, c.SecretID = addr, token
	if namespace != "" {
		c.Namespace = namespace
	}
	if region != "" {
		c.Region = region
	}
	return c
}

// openStoreRetrying loads the deployments, retrying for a while: thaw server
// may start while Nomad (the store) is still coming up.
func openStoreRetrying(ctx context.Context, open func() (*deploy.Store, error), log *slog.Logger) (*deploy.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		store, err := open()
		if err == nil || time.Now().After(deadline) {
			return store, err
		}
		log.Warn("deployment store not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// processConfig: thaw server shares demand through a real Redis and reads
// the operator's users file.
func (c *serverConfig) processConfig() processConfig {
	return processConfig{Service: "thaw-server", Flags: c.proc, Redis: c.redis, UsersFile: c.usersFile}
}
