// Package jobs renders thaw deployments into Nomad jobs: one service job per
// deployment ("thaw-<deploy id>"), one task group ("model") whose count is
// the number of instances, one task ("server"). The nomad runtime renames
// the rendered group once per instance ("i-<hex>", count 1), so that it can
// stop exactly the instance the fleet drained. It builds *api.Job values
// directly rather than templating HCL, so a job is type-checked, needs no
// parser, and the caller passes it straight to Jobs().Register. Rendering
// is pure: no I/O, no clock.
//
// Three engines share everything but the task:
//
//   - EngineVLLM: vLLM's OpenAI server on the docker driver, image
//     vllm/vllm-openai, entrypoint `vllm`, the container port 8000 mapped to
//     the group's dynamic port "http".
//   - EngineVLLMExec: the vLLM installed on the clients (Config.VLLMBinary)
//     on raw_exec, listening on ${NOMAD_IP_http}:${NOMAD_PORT_http}, its
//     caches and temporary files in ${NOMAD_TASK_DIR}, HF_HOME =
//     Config.HFCacheHostPath when set.
//   - EngineSim: `<thaw> sim --host ${NOMAD_IP_http} --port
//     ${NOMAD_PORT_http} --model <owner>/<name> --max-num-seqs N
//     [--startup D] [--tokens-per-second X]` on raw_exec, for tests and for
//     trying thaw without GPUs.
//
// Both vLLM tasks take their command line from package vllm (`serve <hf
// repo> --served-model-name <owner>/<name> --max-num-seqs <max_batch_size>
// [--tensor-parallel-size <num_gpus>] [--revision R] --host H --port P
// <extra args>`), so they cannot drift from each other or from thaw dev's.
// A job cannot see whether its node has GPUs: Config.VLLMDevice ("gpu" by
// default, "cpu" for nodes running a CPU build of vLLM) decides; on "cpu"
// the task gets VLLM_CPU_KVCACHE_SPACE (Config.VLLMKVCacheGiB) and no
// --tensor-parallel-size, and still asks for its devices, so it is placed
// as the real one would be. Config.VLLMEnv adds environment (e.g.
// HF_HUB_OFFLINE=1 on clients with a seeded cache); raw_exec tasks also
// inherit the Nomad client's environment.
//
// Both ask for `device "nvidia/gpu" { count = num_gpus; constraint {
// attribute = "${device.model}", value = <model> } }`, register a native
// Nomad service (provider "nomad", named like the job) with an HTTP check of
// /health every 5s, and set `update { max_parallel = 0 }` so scaling never
// starts a Nomad deployment that would block the next scale.
//
// GPU types map to the device model names the NVIDIA device plugin reports
// through DefaultGPUModels, overridable per entry with Config.GPUModels,
// which LoadConfig reads from a JSON file such as:
//
//	{
//	  "gpu_models": {"H100-80GB": "NVIDIA H100 PCIe", "A10-24GB": "NVIDIA A10"},
//	  "vllm_image": "vllm/vllm-openai:v0.12.0",
//	  "datacenters": ["gpu-east"],
//	  "hf_cache_host_path": "/srv/hf-cache",
//	  "vllm_binary": "/opt/vllm/bin/vllm",
//	  "vllm_device": "cpu",
//	  "vllm_cpu_kvcache_gib": 2,
//	  "vllm_env": {"HF_HUB_OFFLINE": "1"}
//	}
//
// The HF token never appears in a job: Spec has no field for it. thaw writes
// it to the Nomad Variable Renderer.Variable describes (VariablePath:
// "nomad/jobs/<job id>", item "hf_token"), and every task (vLLM's and the
// simulator's, which ignores it) reads it with a template rendered into its
// environment:
//
//	{{ if nomadVarExists "nomad/jobs/thaw-<id>" }}{{ with nomadVar "nomad/jobs/thaw-<id>" }}HF_TOKEN={{ .hf_token }}{{ end }}{{ end }}
//
// nomad/jobs/<job id> is the path Nomad's implicit workload policy lets
// every task of the job read with its workload identity, so with ACLs
// enabled no policy is attached to any job; thaw's own token needs
// variables read, write, destroy and list on nomad/jobs/thaw-* (the README
// has the whole policy). One Variable per job, not per group: each
// instance is a group of its own ("i-<hex>"), and all read the same token.
//
// Before this path, thaw kept the token in thaw/deployments/<deploy id>,
// which a task could read only through a policy attached to its job. thaw
// writes the new Variable whenever it registers a deployment's job (after a
// restart, at its first write), so deployments keep their token; instances
// started before the upgrade keep reading the old one until they stop, and
// the old Variables are then the operator's to delete (`nomad var purge
// thaw/deployments/<deploy id>`). A jobs config with variable_prefix is
// refused with that explanation.
package jobs
