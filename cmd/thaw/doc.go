// Command thaw is the single binary of thaw: the one-process product
// (`thaw dev`), the model-server simulator (`thaw sim`) and the deploy CLI
// (`thaw deploy ...`).
//
// This package only wires. Each long-running command (dev, server,
// activator) parses its flags into a config, starts what they all share
// (startProcess in bootstrap.go: logging, telemetry, Redis, the operators'
// listener), builds its components (each New plus Run) and runs them
// together with process.serve until the context is done or one fails.
package main
