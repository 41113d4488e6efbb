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
// it to the Nomad Variable Renderer.Variable describes
// ("thaw/deployments/<deploy id>", item "hf_token"), and the vLLM tasks read
// it with a template rendered into its environment:
//
//	{{ if nomadVarExists "thaw/deployments/<id>" }}{{ with nomadVar "thaw/deployments/<id>" }}HF_TOKEN={{ .hf_token }}{{ end }}{{ end }}
//
// With ACLs enabled, a task's workload identity reads only the
// nomad/jobs/<job id> variables by itself; the job needs a policy reading
// <prefix>/<deploy id> attached to it (`nomad acl policy apply -namespace
// <ns> -job <job id> <name> <file>`). Without ACLs (`nomad agent -dev`) the
// template reads the variable as is.
package jobs
