// Package bench holds what `make bench` reports with: latency statistics
// over samples, the description of the machine a run happened on, and the
// report itself (one Result per scenario) rendered as JSON, a markdown table
// and a plain-text table. The scenarios live in bench/cmd/thawbench, which
// drives a real `thaw dev` over HTTP.
package bench
