package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/thawhq/thaw/test/e2e"
)

// envoyProc is one Envoy started by the bench, with --concurrency 1.
type envoyProc struct {
	*e2e.Envoy
	dir string
}

// envoyBinFor is bin/envoy next to the thaw binary.
func envoyBinFor(thawBin string) string {
	return filepath.Join(filepath.Dir(thawBin), "envoy")
}

// startEnvoy runs bin with the bootstrap config and waits until its admin
// answers /ready with LIVE.
func startEnvoy(bin string, config []byte, admin string) (*envoyProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("envoy: %w (run make deps)", err)
	}
	dir, err := os.MkdirTemp("", "thawbench-envoy-")
	if err != nil {
		return nil, err
	}
	e, err := e2e.StartEnvoy(e2e.EnvoyConfig{Bin: bin, Bootstrap: config, Admin: admin, Dir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &envoyProc{Envoy: e, dir: dir}, nil
}

func (e *envoyProc) logTail() string { return e.Out.TailLines(12) }

// Stop ends Envoy (SIGTERM, then SIGKILL after 5 s) and removes its files.
func (e *envoyProc) Stop() {
	e.Envoy.Stop()
	os.RemoveAll(e.dir)
}

// staticEnvoyConfig is an Envoy bootstrap with one listener on listen
// routing everything to one STATIC cluster at upstream: no thaw, no
// ext_authz, no xDS (Envoy's own floor).
func staticEnvoyConfig(listen, admin, upstream string) ([]byte, error) {
	sock := func(addr string) (map[string]any, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, err
		}
		return map[string]any{"socket_address": map[string]any{"address": host, "port_value": p}}, nil
	}
	la, err := sock(listen)
	if err != nil {
		return nil, err
	}
	aa, err := sock(admin)
	if err != nil {
		return nil, err
	}
	ua, err := sock(upstream)
	if err != nil {
		return nil, err
	}
	hcm := map[string]any{
		"@type":       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix": "static",
		"route_config": map[string]any{"virtual_hosts": []any{map[string]any{
			"name": "all", "domains": []string{"*"},
			"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "sim", "timeout": "0s"}}},
		}}},
		"http_filters": []any{map[string]any{"name": "envoy.filters.http.router", "typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}},
	}
	return json.MarshalIndent(map[string]any{
		"admin": map[string]any{"address": aa},
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{"name": "static", "address": la, "filter_chains": []any{map[string]any{
				"filters": []any{map[string]any{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}},
			}}}},
			"clusters": []any{map[string]any{
				"name": "sim", "type": "STATIC", "connect_timeout": "2s",
				"load_assignment": map[string]any{"cluster_name": "sim", "endpoints": []any{map[string]any{
					"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": ua}}},
				}}},
			}},
		},
	}, "", "  ")
}
