// Package fakegpu is a Nomad device plugin that advertises fake NVIDIA GPUs,
// so Nomad's real scheduler places GPU jobs, and refuses them when the GPUs
// run out, on a machine without any GPU. thaw's `make cluster` and end-to-end
// tests run the agent with it; nothing else uses it.
//
// It reports device groups the way the NVIDIA device plugin does: vendor
// "nvidia", type "gpu", and the NVML model name as the group name, which is
// what `${device.model}` matches. Each instance has a unique ID,
// "GPU-fake-<group>-<index>". Reserve sets NVIDIA_VISIBLE_DEVICES to the
// reserved IDs and mounts nothing; Stats reports zero utilisation.
//
// It is a separate Go module (built by scripts/deps.sh into
// bin/plugins/thaw-fakegpu) so that the Nomad module's dependencies stay out
// of thaw's go.mod. Agent configuration:
//
//	plugin_dir = "/path/to/thaw/bin/plugins"
//	plugin "thaw-fakegpu" {
//	  config {
//	    # comma-separated "model:count"; the count follows the last colon
//	    gpus      = "NVIDIA H100 80GB HBM3:4,NVIDIA A100-SXM4-80GB:2"
//	    id_prefix = "GPU-fake"   # optional; make it differ per client on one host
//	  }
//	}
//
// A job then asks for them exactly as on a real GPU node:
//
//	device "nvidia/gpu" {
//	  count = 2
//	  constraint {
//	    attribute = "${device.model}"
//	    value     = "NVIDIA H100 80GB HBM3"
//	  }
//	}
package fakegpu
