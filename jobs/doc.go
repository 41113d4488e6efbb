// Package jobs renders thaw deployments into Nomad jobs: one service job per
// deployment ("thaw-<deploy id>"), one task group ("model") whose count is
// the number of instances, one task ("server"). The nomad runtime renames
// the rendered group once per instance ("i-<hex>", count 1), so that it can
// stop exactly the instance the fleet drained. It builds *api.Job values
// directly rather than templating HCL, so a job is type-checked, needs no
// parser, and the caller passes it straight to Jobs().Register. Rendering
// is pure: no I/O, no clock.
//
// Two engines share everything but the task:
//
//   - EngineVLLM: vLLM's OpenAI server (`vllm serve <hf repo> --revision R
//     --served-model-name <owner>/<name> --max-num-seqs <max_batch_size>
//     --tensor-parallel-size <num_gpus> --port 8000 <extra args>`) on the
//     docker driver, image vllm/vllm-openai, the container port 8000 mapped
//     to the group's dynamic port "http".
//   - EngineSim: `<thaw> sim --host ${NOMAD_IP_http} --port
//     ${NOMAD_PORT_http} --model <owner>/<name> --max-num-seqs N
//     [--startup D] [--tokens-per-second X]` on raw_exec, for tests and for
//     trying thaw without GPUs.
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
//	  "hf_cache_host_path": "/srv/hf-cache"
//	}
//
// The HF token never appears in a job: Spec has no field for it. thaw writes
// it to the Nomad Variable Renderer.Variable describes
// ("thaw/deployments/<deploy id>", item "hf_token"), and the vLLM task reads
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
