package jobs

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// view is the part of a rendered job a user (or Nomad) acts on.
type view struct {
	JobID, Type string
	Meta        map[string]string
	Group       string
	Count       int
	Update      *api.UpdateStrategy
	Ports       []api.Port
	Services    []*api.Service
	Task        string
	Driver      string
	Config      map[string]any
	Devices     []*api.RequestedDevice
	Templates   []*api.Template
	Env         map[string]string
}

func viewOf(t *testing.T, job *api.Job) view {
	t.Helper()
	if len(job.TaskGroups) != 1 || len(job.TaskGroups[0].Tasks) != 1 {
		t.Fatalf("job has %d groups, want 1 group with 1 task", len(job.TaskGroups))
	}
	tg := job.TaskGroups[0]
	task := tg.Tasks[0]
	if len(tg.Networks) != 1 {
		t.Fatalf("group has %d networks, want 1", len(tg.Networks))
	}
	return view{
		JobID: *job.ID, Type: *job.Type, Meta: job.Meta,
		Group: *tg.Name, Count: *tg.Count, Update: tg.Update,
		Ports: tg.Networks[0].DynamicPorts, Services: tg.Services,
		Task: task.Name, Driver: task.Driver, Config: task.Config,
		Devices: task.Resources.Devices, Templates: task.Templates, Env: task.Env,
	}
}

// renderView renders spec with a Renderer of cfg and returns its view.
func renderView(t *testing.T, cfg Config, spec Spec) view {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	job, err := r.Job(spec)
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	return viewOf(t, job)
}

// rawExecView is the view of a raw_exec job of one task group.
func rawExecView(id, engine, gpu string, count int) view {
	return view{
		JobID: "thaw-" + id, Type: "service", Meta: wantMeta(id, engine, gpu),
		Group: "model", Count: count, Update: &api.UpdateStrategy{MaxParallel: new(0)},
		Ports: []api.Port{{Label: "http"}}, Services: wantService(id),
		Task: "server", Driver: "raw_exec",
	}
}

func wantDevices(n uint64, model string) []*api.RequestedDevice {
	return []*api.RequestedDevice{{
		Name:        "nvidia/gpu",
		Count:       &n,
		Constraints: []*api.Constraint{{LTarget: "${device.model}", RTarget: model, Operand: "="}},
	}}
}

func wantService(deployID string) []*api.Service {
	return []*api.Service{{
		Name: "thaw-" + deployID, PortLabel: "http", Provider: "nomad", Tags: []string{"thaw"},
		Checks: []api.ServiceCheck{{
			Name: "health", Type: "http", Path: "/health",
			Interval: 5 * time.Second, Timeout: 2 * time.Second,
		}},
	}}
}

func wantMeta(id, engine, gpu string) map[string]string {
	return map[string]string{
		"thaw_deploy_id": id, "thaw_owner": "alice", "thaw_model": "alice/llama",
		"thaw_engine": engine, "thaw_gpu": gpu,
	}
}

// wantTokenTemplates is the HF token's template of deployment id's task:
// the Variable at the job's own workload path, into the environment.
func wantTokenTemplates(id string) []*api.Template {
	path := "nomad/jobs/thaw-" + id
	return []*api.Template{{
		EmbeddedTmpl: new(`{{ if nomadVarExists "` + path + `" }}{{ with nomadVar "` + path +
			`" }}HF_TOKEN={{ .hf_token }}{{ end }}{{ end }}` + "\n"),
		DestPath:   new("secrets/hf.env"),
		Envvars:    new(true),
		ChangeMode: new("restart"),
	}}
}

func TestJobVLLM(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		spec Spec
		want view
	}{
		{
			name: "two H100 with revision and extra args",
			spec: Spec{
				DeployID: "d-0123456789abcdef", Owner: "alice", Model: "alice/llama",
				GPU: "H100-80GB", NumGPUs: 2, MaxBatchSize: 64,
				HFRepo: "meta-llama/Llama-3.1-8B-Instruct", HFRevision: "0e9e39f",
				ExtraArgs: []string{"--dtype", "half"}, Count: 1, Engine: EngineVLLM,
			},
			want: view{
				JobID: "thaw-d-0123456789abcdef", Type: "service",
				Meta:  wantMeta("d-0123456789abcdef", "vllm", "H100-80GB"),
				Group: "model", Count: 1, Update: &api.UpdateStrategy{MaxParallel: new(0)},
				Ports:    []api.Port{{Label: "http", To: 8000}},
				Services: wantService("d-0123456789abcdef"),
				Task:     "server", Driver: "docker",
				Config: map[string]any{
					"image":      "vllm/vllm-openai:latest",
					"entrypoint": []string{"vllm"},
					"args": []string{
						"serve", "meta-llama/Llama-3.1-8B-Instruct",
						"--served-model-name", "alice/llama",
						"--max-num-seqs", "64",
						"--tensor-parallel-size", "2",
						"--revision", "0e9e39f",
						"--host", "0.0.0.0", "--port", "8000",
						"--dtype", "half",
					},
					"ports":    []string{"http"},
					"shm_size": int64(8 << 30),
				},
				Devices:   wantDevices(2, "NVIDIA H100 80GB HBM3"),
				Templates: wantTokenTemplates("d-0123456789abcdef"),
			},
		},
		{
			name: "default engine, no revision, operator config",
			cfg: Config{
				VLLMImage: "vllm/vllm-openai:v0.12.0", HFCacheHostPath: "/srv/hf",
				ShmSizeBytes: 1 << 30,
				GPUModels:    map[string]string{"L4-24GB": "NVIDIA L4 PCIe"},
			},
			spec: Spec{
				DeployID: "d1", Owner: "alice", Model: "alice/llama", GPU: "L4-24GB",
				NumGPUs: 1, MaxBatchSize: 8, HFRepo: "org/repo",
			},
			want: view{
				JobID: "thaw-d1", Type: "service", Meta: wantMeta("d1", "vllm", "L4-24GB"),
				Group: "model", Count: 0, Update: &api.UpdateStrategy{MaxParallel: new(0)},
				Ports: []api.Port{{Label: "http", To: 8000}}, Services: wantService("d1"),
				Task: "server", Driver: "docker",
				Config: map[string]any{
					"image":      "vllm/vllm-openai:v0.12.0",
					"entrypoint": []string{"vllm"},
					"args": []string{
						"serve", "org/repo", "--served-model-name", "alice/llama", "--max-num-seqs", "8",
						"--tensor-parallel-size", "1", "--host", "0.0.0.0", "--port", "8000",
					},
					"ports":    []string{"http"},
					"shm_size": int64(1 << 30),
					"volumes":  []string{"/srv/hf:/root/.cache/huggingface"},
				},
				Devices:   wantDevices(1, "NVIDIA L4 PCIe"),
				Templates: wantTokenTemplates("d1"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, renderView(t, tt.cfg, tt.spec)); diff != "" {
				t.Errorf("rendered job (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJobSim(t *testing.T) {
	tests := []struct {
		name     string
		spec     Spec
		wantArgs []string
	}{
		{
			name: "tuned",
			spec: Spec{
				DeployID: "d2", Owner: "alice", Model: "alice/llama", GPU: "H100-80GB", NumGPUs: 2,
				MaxBatchSize: 4, Count: 3, Engine: EngineSim, ThawBinary: "/opt/thaw/bin/thaw",
				SimStartup: 1500 * time.Millisecond, SimTokensPerSecond: 12.5,
				HFRepo: "org/repo", ExtraArgs: []string{"--dtype", "half"},
			},
			wantArgs: []string{
				"sim", "--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}",
				"--model", "alice/llama", "--max-num-seqs", "4",
				"--startup", "1.5s", "--tokens-per-second", "12.5",
			},
		},
		{
			name: "simulator defaults",
			spec: Spec{
				DeployID: "d2", Owner: "alice", Model: "alice/llama", GPU: "H100-80GB", NumGPUs: 2,
				MaxBatchSize: 4, Count: 3, Engine: EngineSim, ThawBinary: "/opt/thaw/bin/thaw",
			},
			wantArgs: []string{
				"sim", "--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}",
				"--model", "alice/llama", "--max-num-seqs", "4",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := rawExecView("d2", "sim", "H100-80GB", 3)
			want.Config = map[string]any{"command": "/opt/thaw/bin/thaw", "args": tt.wantArgs}
			want.Devices = wantDevices(2, "NVIDIA H100 80GB HBM3")
			want.Templates = wantTokenTemplates("d2")
			if diff := cmp.Diff(want, renderView(t, Config{}, tt.spec)); diff != "" {
				t.Errorf("rendered job (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJobNeverContainsHFToken(t *testing.T) {
	const secret = "hf_s3cr3tTOKENvalue"
	t.Setenv("HF_TOKEN", secret) // a renderer reading the environment would leak it
	r, err := New(Config{VLLMBinary: "/opt/vllm/bin/vllm"})
	if err != nil {
		t.Fatal(err)
	}
	for _, engine := range Engines {
		job, err := r.Job(Spec{
			DeployID: "d3", Owner: "alice", Model: "alice/private", GPU: "A100-80GB",
			NumGPUs: 1, MaxBatchSize: 1, HFRepo: "alice/private-weights", Count: 1,
			Engine: engine, ThawBinary: "/usr/local/bin/thaw",
		})
		if err != nil {
			t.Fatalf("%s: Job: %v", engine, err)
		}
		b, err := json.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s: the job's JSON contains the HF token", engine)
		}
		if _, ok := job.TaskGroups[0].Tasks[0].Env["HF_TOKEN"]; ok {
			t.Errorf("%s: HF_TOKEN set inline in the task env", engine)
		}
	}
	// The token goes to the variable the template reads, and only there.
	v := r.Variable("d3", secret)
	want := &api.Variable{Path: "nomad/jobs/thaw-d3", Items: api.VariableItems{"hf_token": secret}}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("Variable (-want +got):\n%s", diff)
	}
}

func TestJobRejects(t *testing.T) {
	ok := Spec{
		DeployID: "d4", Owner: "alice", Model: "alice/m", GPU: "H100-80GB", NumGPUs: 1,
		MaxBatchSize: 1, HFRepo: "o/r", Engine: EngineVLLM, ThawBinary: "/bin/thaw",
	}
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   error
	}{
		{"unknown gpu", func(s *Spec) { s.GPU = "RTX-4090" }, ErrUnknownGPU},
		{"bad deploy id", func(s *Spec) { s.DeployID = "D 1" }, ErrInvalidSpec},
		{"empty model", func(s *Spec) { s.Model = "" }, ErrInvalidSpec},
		{"zero gpus", func(s *Spec) { s.NumGPUs = 0 }, ErrInvalidSpec},
		{"zero batch", func(s *Spec) { s.MaxBatchSize = 0 }, ErrInvalidSpec},
		{"negative count", func(s *Spec) { s.Count = -1 }, ErrInvalidSpec},
		{"vllm without repo", func(s *Spec) { s.HFRepo = "" }, ErrInvalidSpec},
		// Stored before the deploy API checked them: never rendered into
		// vLLM's arguments, where Nomad interpolates ${...}.
		{"repo a flag", func(s *Spec) { s.HFRepo = "--trust-remote-code" }, ErrInvalidSpec},
		{"revision interpolated by Nomad", func(s *Spec) { s.HFRevision = "${NOMAD_TOKEN}" }, ErrInvalidSpec},
		{"revision a flag", func(s *Spec) { s.HFRevision = "-x" }, ErrInvalidSpec},
		{"revision climbing", func(s *Spec) { s.HFRevision = "../../etc" }, ErrInvalidSpec},
		{"sim without binary", func(s *Spec) { s.Engine, s.ThawBinary = EngineSim, "" }, ErrInvalidSpec},
		{"vllm-exec without the vllm binary", func(s *Spec) { s.Engine = EngineVLLMExec }, ErrInvalidSpec},
		{"vllm-exec without repo", func(s *Spec) { s.Engine, s.HFRepo = EngineVLLMExec, "" }, ErrInvalidSpec},
		{"unknown engine", func(s *Spec) { s.Engine = "tgi" }, ErrInvalidSpec},
	}
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Job(ok); err != nil {
		t.Fatalf("valid spec rejected: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mutate(&s)
			job, err := r.Job(s)
			if !errors.Is(err, tt.want) || job != nil {
				t.Fatalf("Job = %v, %v; want nil, %v", job, err, tt.want)
			}
		})
	}
}
