// Package vllm is the one definition of how thaw runs vLLM's OpenAI server:
// its command line from a deployment (Args), the environment vLLM's own
// settings need (Env), the device it runs on (Device, Detect) and where its
// executable is (FindBinary). Every engine that runs vLLM uses it, so their
// arguments cannot drift: `thaw dev --engine vllm` (localrt, a child
// process), and `thaw server --engine vllm` (docker) and `--engine
// vllm-exec` (raw_exec) through the jobs package.
//
// The command line is
//
//	serve <hf repo> --served-model-name <owner>/<model> --max-num-seqs <max_batch_size>
//	  [--tensor-parallel-size <num_gpus>] [--revision <rev>] --host H --port P <extra args...>
//
// with --tensor-parallel-size only on GPUs. Host and port are strings, so
// that Nomad's "${NOMAD_IP_http}" and "${NOMAD_PORT_http}" fit.
//
// On CPUs vLLM needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache; without it, it
// tries to reserve most of the machine's memory). Each instance gets its own
// directory for vLLM's cache (VLLM_CACHE_ROOT), torch's compile cache
// (TORCHINDUCTOR_CACHE_DIR) and temporary files (TMPDIR), so that nothing
// piles up in /tmp or is shared between instances; the directory is also the
// working directory, which vLLM puts on a subprocess's sys.path. Args and
// Env are pure; Detect and FindBinary look at the machine.
package vllm
