package jobs

import (
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/hashicorp/nomad/api"
	"github.com/thawhq/thaw/vllm"
)

// hfCacheInContainer is where the docker task mounts Config.HFCacheHostPath:
// the vLLM image's Hugging Face cache.
const hfCacheInContainer = "/root/.cache/huggingface"

// nomadPort and nomadIP are Nomad's interpolations of the group's port and
// the address it is bound to.
const (
	nomadIP   = "${NOMAD_IP_" + PortLabel + "}"
	nomadPort = "${NOMAD_PORT_" + PortLabel + "}"
)

// hfTokenTemplate renders the HF token from the deployment's Nomad Variable
// into the task's environment. nomadVarExists keeps a deployment without a
// token (public weights) from blocking on a variable that never appears.
func hfTokenTemplate(path string) string {
	return fmt.Sprintf(`{{ if nomadVarExists %[1]q }}{{ with nomadVar %[1]q }}HF_TOKEN={{ .%[2]s }}{{ end }}{{ end }}`+"\n",
		path, HFTokenKey)
}

// hfTokenTemplates is the template that puts the HF token into a task's
// environment (HF_TOKEN), from the deployment's Nomad Variable, through
// the task's workload identity; the task restarts when the token changes.
func hfTokenTemplates(deployID string) []*api.Template {
	return []*api.Template{{
		EmbeddedTmpl: new(hfTokenTemplate(VariablePath(deployID))),
		DestPath:     new("secrets/hf.env"),
		Envvars:      new(true),
		ChangeMode:   new("restart"),
	}}
}

// vllmSpec is s as vLLM's command line needs it.
func vllmSpec(s Spec) vllm.Spec {
	return vllm.Spec{
		Repo: s.HFRepo, Revision: s.HFRevision, Model: s.Model,
		MaxBatchSize: s.MaxBatchSize, NumGPUs: s.NumGPUs, ExtraArgs: s.ExtraArgs,
	}
}

// vllmTaskCommon sets what both vLLM tasks share on t: the HF token
// template, the resources, and the environment: env (vLLM's settings for
// where it runs), then Config.VLLMEnv. An empty environment stays nil.
func (r *Renderer) vllmTaskCommon(t *api.Task, s Spec, env []string) {
	t.Templates = hfTokenTemplates(s.DeployID)
	t.Resources = &api.Resources{CPU: new(r.cfg.VLLMCPU), MemoryMB: new(r.cfg.VLLMMemoryMB)}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	maps.Copy(vars, r.cfg.VLLMEnv)
	if len(vars) > 0 {
		t.Env = vars
	}
}

// vllmTask is vLLM's OpenAI server on docker; GPUs come from the device
// reservation (the docker driver picks the nvidia runtime for it). Its
// caches stay in the container, which goes with the allocation.
func (r *Renderer) vllmTask(s Spec) *api.Task {
	config := map[string]any{
		"image":      r.cfg.VLLMImage,
		"entrypoint": []string{vllm.BinaryName},
		"args":       vllm.Args(vllmSpec(s), r.cfg.VLLMDevice, "0.0.0.0", strconv.Itoa(VLLMContainerPort)),
		"ports":      []string{PortLabel},
		"shm_size":   r.cfg.ShmSizeBytes,
	}
	if r.cfg.HFCacheHostPath != "" {
		config["volumes"] = []string{r.cfg.HFCacheHostPath + ":" + hfCacheInContainer}
	}
	t := api.NewTask(TaskName, "docker")
	t.Config = config
	r.vllmTaskCommon(t, s, vllm.Env(vllm.Settings{Device: r.cfg.VLLMDevice, KVCacheGiB: r.cfg.VLLMKVCacheGiB}))
	return t
}

// vllmExecTask is the vLLM installed on the client (Config.VLLMBinary) on
// raw_exec, listening on the group's dynamic port. Its caches and temporary
// files go to the task's own directory (NOMAD_TASK_DIR, removed with the
// allocation), which is also where raw_exec starts it; the weights cache is
// Config.HFCacheHostPath, else the client's own HF_HOME.
func (r *Renderer) vllmExecTask(s Spec) *api.Task {
	t := api.NewTask(TaskName, "raw_exec")
	t.Config = map[string]any{
		"command": r.cfg.VLLMBinary,
		"args":    vllm.Args(vllmSpec(s), r.cfg.VLLMDevice, nomadIP, nomadPort),
	}
	env := vllm.Env(vllm.Settings{Device: r.cfg.VLLMDevice, KVCacheGiB: r.cfg.VLLMKVCacheGiB, Dir: "${NOMAD_TASK_DIR}", CacheDir: r.cfg.VLLMCacheDir})
	if r.cfg.HFCacheHostPath != "" {
		env = append(env, "HF_HOME="+r.cfg.HFCacheHostPath)
	}
	r.vllmTaskCommon(t, s, env)
	return t
}

// simTask is `thaw sim` on raw_exec, listening on the group's dynamic port.
// It gets the HF token as vLLM does (the simulator ignores it), so a
// simulated deployment exercises the token's whole path: Variable, workload
// identity, template, environment.
func (r *Renderer) simTask(s Spec) *api.Task {
	args := []string{
		"sim",
		"--host", nomadIP,
		"--port", nomadPort,
		"--model", s.Model,
		"--max-num-seqs", strconv.Itoa(s.MaxBatchSize),
	}
	if s.SimStartup > 0 {
		args = append(args, "--startup", s.SimStartup.String())
	}
	if s.SimTokensPerSecond > 0 {
		args = append(args, "--tokens-per-second", strconv.FormatFloat(s.SimTokensPerSecond, 'g', -1, 64))
	}
	t := api.NewTask(TaskName, "raw_exec")
	t.Config = map[string]any{"command": s.ThawBinary, "args": args}
	t.Resources = &api.Resources{CPU: new(r.cfg.SimCPU), MemoryMB: new(r.cfg.SimMemoryMB)}
	t.Templates = hfTokenTemplates(s.DeployID)
	return t
}
