// Command thaw-fakegpu is a Nomad device plugin advertising fake nvidia/gpu
// devices; see package github.com/thawhq/thaw/nomad/fakegpu for its config.
// Put the binary in the agent's plugin_dir; the agent starts it.
package main

import (
	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins"

	"github.com/thawhq/thaw/nomad/fakegpu"
)

func main() {
	plugins.Serve(func(l log.Logger) interface{} { return fakegpu.New(l) })
}
