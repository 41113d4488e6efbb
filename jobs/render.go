package jobs

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/thawhq/thaw/deploy"
)

// Names shared by every rendered job; thaw finds its allocations, services
// and ports by them.
const (
	// JobPrefix prefixes job IDs: JobID(id) = JobPrefix + id.
	JobPrefix = "thaw-"
	// GroupName is the task group whose count is the number of instances.
	GroupName = "model"
	// TaskName is the model server task.
	TaskName = "server"
	// PortLabel is the dynamic port the model server listens on.
	PortLabel = "http"
	// HealthPath is the model server's health endpoint, checked by Nomad.
	HealthPath = "/health"
	// VLLMContainerPort is the port vLLM listens on inside its container.
	VLLMContainerPort = 8000
	// DeviceName is the device request; the NVIDIA plugin (and the fake
	// one) advertise vendor "nvidia", type "gpu".
	DeviceName = "nvidia/gpu"
	// HFTokenKey is the item of the deployment's Nomad Variable holding
	// the Hugging Face token.
	HFTokenKey = "hf_token"
)

// Job meta keys, so a job seen in Nomad maps back to its deployment.
const (
	MetaDeployID = "thaw_deploy_id"
	MetaOwner    = "thaw_owner"
	MetaModel    = "thaw_model"
	MetaEngine   = "thaw_engine"
	MetaGPU      = "thaw_gpu"
)

// Health check timing of the model server's service, and the restart
// policy: a task failing more than restartAttempts times in
// restartInterval fails its allocation, which thaw reports.
const (
	checkInterval   = 5 * time.Second
	checkTimeout    = 2 * time.Second
	restartAttempts = 2
	restartInterval = 5 * time.Minute
	restartDelay    = 5 * time.Second
	killTimeout     = 30 * time.Second
)

// Engine selects the model server a job runs.
type Engine string

// Engines.
const (
	// EngineVLLM runs vLLM's OpenAI server on the docker driver.
	EngineVLLM Engine = "vllm"
	// EngineVLLMExec runs a vLLM installed on the Nomad clients
	// (Config.VLLMBinary) on raw_exec, on GPUs or, with Config.VLLMDevice
	// "cpu", on CPUs.
	EngineVLLMExec Engine = "vllm-exec"
	// EngineSim runs `thaw sim` on raw_exec: no GPU is used, but the job
	// asks for the same devices, so Nomad schedules it like the real one.
	EngineSim Engine = "sim"
)

// Engines lists the engines, for flags and messages.
var Engines = []Engine{EngineVLLM, EngineVLLMExec, EngineSim}

var (
	// ErrInvalidSpec is returned (wrapped) for a Spec that cannot be
	// rendered.
	ErrInvalidSpec = errors.New("jobs: invalid spec")
	// ErrUnknownGPU is returned (wrapped) for a GPU type missing from the
	// GPU model table.
	ErrUnknownGPU = errors.New("jobs: unknown GPU type")
)

// deployIDRe bounds deploy IDs to what Nomad accepts in job IDs and native
// service names (RFC 1123 labels, with the prefix).
var deployIDRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$`)

// Spec is a deployment as the job templates need it. It has no field for
// the HF token on purpose: the token reaches the task only through the Nomad
// Variable (see Renderer.Variable).
type Spec struct {
	// DeployID is the deployment's ID, e.g. "d-0123456789abcdef".
	DeployID string
	// Owner is the user owning the deployment.
	Owner string
	// Model is the full model name clients call, "<owner>/<model-name>";
	// the server's --served-model-name.
	Model string
	// GPU is thaw's GPU type name, e.g. "H100-80GB".
	GPU string
	// NumGPUs is the GPUs per instance (vLLM's --tensor-parallel-size).
	NumGPUs int
	// MaxBatchSize is vLLM's --max-num-seqs.
	MaxBatchSize int
	// HFRepo and HFRevision locate the weights; an empty revision means
	// the repository's default branch. HFRepo is required for vLLM.
	HFRepo     string
	HFRevision string
	// ExtraArgs are appended to vLLM's command line (not the simulator's).
	ExtraArgs []string
	// Count is the initial number of instances (min_instances).
	Count int
	// Engine is the model server; default EngineVLLM.
	Engine Engine
	// SimStartup and SimTokensPerSecond tune the simulator; zero means
	// its defaults.
	SimStartup         time.Duration
	SimTokensPerSecond float64
	// ThawBinary is the absolute path of the thaw binary on the Nomad
	// clients; required for EngineSim.
	ThawBinary string
}

// Renderer renders deployments into Nomad jobs. It is immutable and safe
// for concurrent use.
type Renderer struct {
	cfg Config
}

// New validates cfg, fills in defaults and returns a Renderer.
func New(cfg Config) (*Renderer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Renderer{cfg: cfg}, nil
}

// GPUModel returns the NVIDIA device model name of thaw GPU type gpu.
func (r *Renderer) GPUModel(gpu string) (string, bool) {
	m, ok := r.cfg.GPUModels[gpu]
	return m, ok
}

// GPUTypes returns the thaw GPU types the table knows, sorted.
func (r *Renderer) GPUTypes() []string {
	out := make([]string, 0, len(r.cfg.GPUModels))
	for k := range r.cfg.GPUModels {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// JobID returns the Nomad job ID of a deployment.
func JobID(deployID string) string { return JobPrefix + deployID }

// ServiceName returns the native Nomad service name of a deployment's
// instances; it equals the job ID.
func ServiceName(deployID string) string { return JobPrefix + deployID }

// VariablePath returns the path of the deployment's Nomad Variable, which
// holds the HF token under HFTokenKey: nomad/jobs/<job id>, the path every
// task of the job may read through its workload identity, ACLs or not,
// with no policy attached to the job.
func VariablePath(deployID string) string {
	return workloadVariablePrefix + JobID(deployID)
}

// workloadVariablePrefix is where Nomad's implicit workload policy lets a
// job's tasks read variables: nomad/jobs/<job id>[/<group>[/<task>]].
// thaw uses the job's own path: every instance is a group of its own.
const workloadVariablePrefix = "nomad/jobs/"

// Variable returns the Nomad Variable thaw writes (Variables().Create or
// Update) before registering a vLLM job with private weights.
func (r *Renderer) Variable(deployID, hfToken string) *api.Variable {
	return &api.Variable{
		Namespace: r.cfg.Namespace,
		Path:      VariablePath(deployID),
		Items:     api.VariableItems{HFTokenKey: hfToken},
	}
}

// Job renders the deployment's job. It does no I/O.
func (r *Renderer) Job(s Spec) (*api.Job, error) {
	if s.Engine == "" {
		s.Engine = EngineVLLM
	}
	model, err := r.validate(s)
	if err != nil {
		return nil, err
	}

	id := JobID(s.DeployID)
	job := &api.Job{
		ID:          new(id),
		Name:        new(id),
		Type:        new(api.JobTypeService),
		Datacenters: slices.Clone(r.cfg.Datacenters),
	}
	// Unset means the client's namespace and region, Nomad's node pool.
	if r.cfg.Namespace != "" {
		job.Namespace = new(r.cfg.Namespace)
	}
	if r.cfg.Region != "" {
		job.Region = new(r.cfg.Region)
	}
	if r.cfg.NodePool != "" {
		job.NodePool = new(r.cfg.NodePool)
	}
	job.Meta = map[string]string{
		MetaDeployID: s.DeployID,
		MetaOwner:    s.Owner,
		MetaModel:    s.Model,
		MetaEngine:   string(s.Engine),
		MetaGPU:      s.GPU,
	}

	var task *api.Task
	port := api.Port{Label: PortLabel}
	switch s.Engine {
	case EngineVLLM:
		task = r.vllmTask(s)
		port.To = VLLMContainerPort
	case EngineVLLMExec:
		task = r.vllmExecTask(s)
	case EngineSim:
		task = r.simTask(s)
	}
	numGPUs := uint64(s.NumGPUs)
	task.Resources.Devices = []*api.RequestedDevice{{
		Name:  DeviceName,
		Count: &numGPUs,
		Constraints: []*api.Constraint{
			api.NewConstraint("${device.model}", "=", model),
		},
	}}
	task.KillTimeout = new(killTimeout)

	tg := group(s, port)
	tg.Tasks = []*api.Task{task}
	job.TaskGroups = []*api.TaskGroup{tg}
	return job, nil
}

// group renders the instance task group around one task: its port, its
// restart policy (fail fast: the fleet replaces) and its health check.
func group(s Spec, port api.Port) *api.TaskGroup {
	tg := api.NewTaskGroup(GroupName, s.Count)
	tg.Update = &api.UpdateStrategy{MaxParallel: new(0)}
	tg.Networks = []*api.NetworkResource{{DynamicPorts: []api.Port{port}}}
	tg.RestartPolicy = &api.RestartPolicy{
		Attempts: new(restartAttempts),
		Interval: new(restartInterval),
		Delay:    new(restartDelay),
		Mode:     new("fail"),
	}
	tg.Services = []*api.Service{{
		Name:      ServiceName(s.DeployID),
		PortLabel: PortLabel,
		Provider:  "nomad",
		Tags:      []string{"thaw"},
		Checks: []api.ServiceCheck{{
			Name:     "health",
			Type:     "http",
			Path:     HealthPath,
			Interval: checkInterval,
			Timeout:  checkTimeout,
		}},
	}}
	return tg
}

// validate checks s and returns the device model its GPU maps to.
func (r *Renderer) validate(s Spec) (string, error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: "+format, append([]any{ErrInvalidSpec}, args...)...)
	}
	switch {
	case !deployIDRe.MatchString(s.DeployID):
		return bad("deploy id %q: want lower-case letters, digits and dashes", s.DeployID)
	case s.Model == "":
		return bad("model name is empty")
	case s.NumGPUs < 1:
		return bad("num_gpus = %d, want at least 1", s.NumGPUs)
	case s.MaxBatchSize < 1:
		return bad("max_batch_size = %d, want at least 1", s.MaxBatchSize)
	case s.Count < 0:
		return bad("count = %d, must not be negative", s.Count)
	case s.SimStartup < 0 || s.SimTokensPerSecond < 0:
		return bad("simulator startup and tokens per second must not be negative")
	}
	switch s.Engine {
	case EngineVLLM, EngineVLLMExec:
		if s.Engine == EngineVLLMExec && r.cfg.VLLMBinary == "" {
			return bad("engine %s needs the vllm executable's path on the clients (config vllm_binary, thaw server --vllm-bin)", s.Engine)
		}
		// The repository and revision become vLLM's arguments, where Nomad
		// would interpolate "${...}": render only names that pass the
		// deploy API's own rules, even for records stored before them.
		if s.HFRepo == "" {
			return bad("hf repo is empty")
		}
		if err := deploy.CheckHFRepo(s.HFRepo); err != nil {
			return bad("%v", err)
		}
		if s.HFRevision != "" {
			if err := deploy.CheckHFRevision(s.HFRevision); err != nil {
				return bad("%v", err)
			}
		}
	case EngineSim:
		if s.ThawBinary == "" {
			return bad("thaw binary path is empty")
		}
	default:
		return bad("engine %q, want one of %q", s.Engine, Engines)
	}
	model, ok := r.GPUModel(s.GPU)
	if !ok {
		return "", fmt.Errorf("%w %q (known: %s)", ErrUnknownGPU, s.GPU, strings.Join(r.GPUTypes(), ", "))
	}
	return model, nil
}
