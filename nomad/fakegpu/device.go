package fakegpu

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/device"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	"github.com/hashicorp/nomad/plugins/shared/structs"
)

const (
	// PluginName is the name the agent config's `plugin "<name>"` block uses.
	PluginName = "thaw-fakegpu"
	// Vendor and DeviceType match the NVIDIA plugin, so jobs ask for
	// `device "nvidia/gpu"` exactly as on a real GPU node.
	Vendor     = "nvidia"
	DeviceType = device.DeviceTypeGPU
	// VisibleDevicesEnv is set by Reserve to the comma-separated reserved
	// IDs, as the NVIDIA plugin does.
	VisibleDevicesEnv = "NVIDIA_VISIBLE_DEVICES"
	// pluginVersion is reported to the agent.
	pluginVersion = "v0.1.0"
)

var (
	pluginInfo = &base.PluginInfoResponse{
		Type:              base.PluginTypeDevice,
		PluginApiVersions: []string{device.ApiVersion010},
		PluginVersion:     pluginVersion,
		Name:              PluginName,
	}

	configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
		"gpus": hclspec.NewDefault(
			hclspec.NewAttr("gpus", "string", false),
			hclspec.NewLiteral(`""`),
		),
		"id_prefix": hclspec.NewDefault(
			hclspec.NewAttr("id_prefix", "string", false),
			hclspec.NewLiteral(`"`+DefaultIDPrefix+`"`),
		),
	})
)

// Config is the plugin's configuration as decoded from the agent's
// `plugin "thaw-fakegpu" { config { ... } }` block.
type Config struct {
	// GPUs is the spec ParseSpec reads: "model:count[,model:count...]".
	GPUs string `codec:"gpus"`
	// IDPrefix prefixes device IDs; default DefaultIDPrefix.
	IDPrefix string `codec:"id_prefix"`
}

// Plugin is a Nomad device plugin advertising fake nvidia/gpu devices. It
// implements device.DevicePlugin. The zero value is not usable; use New.
type Plugin struct {
	logger log.Logger

	// mu guards groups and known.
	mu     sync.RWMutex
	groups []*device.DeviceGroup
	known  map[string]bool
}

// New returns a plugin with no devices until SetConfig is called.
func New(logger log.Logger) *Plugin {
	if logger == nil {
		logger = log.NewNullLogger()
	}
	return &Plugin{logger: logger.Named(PluginName), known: map[string]bool{}}
}

// PluginInfo describes the plugin to the agent.
func (p *Plugin) PluginInfo() (*base.PluginInfoResponse, error) {
	return pluginInfo, nil
}

// ConfigSchema returns the schema of the plugin's config block.
func (p *Plugin) ConfigSchema() (*hclspec.Spec, error) {
	return configSpec, nil
}

// SetConfig parses the configuration and builds the device groups.
func (p *Plugin) SetConfig(c *base.Config) error {
	var cfg Config
	if len(c.PluginConfig) > 0 {
		if err := base.MsgPackDecode(c.PluginConfig, &cfg); err != nil {
			return fmt.Errorf("fakegpu: decode config: %w", err)
		}
	}
	specs, err := ParseSpec(cfg.GPUs)
	if err != nil {
		return err
	}
	prefix := cfg.IDPrefix
	if prefix == "" {
		prefix = DefaultIDPrefix
	}
	groups, known := buildGroups(prefix, specs)

	p.mu.Lock()
	p.groups, p.known = groups, known
	p.mu.Unlock()
	p.logger.Info("config set", "gpus", cfg.GPUs, "groups", len(groups), "devices", len(known))
	return nil
}

// buildGroups turns parsed specs into device groups and the set of IDs.
func buildGroups(prefix string, specs []Group) ([]*device.DeviceGroup, map[string]bool) {
	groups := make([]*device.DeviceGroup, 0, len(specs))
	known := map[string]bool{}
	for g, s := range specs {
		devs := make([]*device.Device, s.Count)
		for i := range devs {
			id := DeviceID(prefix, g, i)
			known[id] = true
			devs[i] = &device.Device{ID: id, Healthy: true}
		}
		groups = append(groups, &device.DeviceGroup{
			Vendor:  Vendor,
			Type:    DeviceType,
			Name:    s.Model,
			Devices: devs,
			Attributes: map[string]*structs.Attribute{
				"driver_version": structs.NewStringAttribute("thaw-fakegpu " + pluginVersion),
				"fake":           structs.NewBoolAttribute(true),
			},
		})
	}
	return groups, known
}

// Fingerprint sends the configured device groups once and keeps the stream
// open (the agent treats a closed stream as the plugin going away) until ctx
// is done.
func (p *Plugin) Fingerprint(ctx context.Context) (<-chan *device.FingerprintResponse, error) {
	p.mu.RLock()
	groups := p.groups
	p.mu.RUnlock()

	out := make(chan *device.FingerprintResponse, 1)
	out <- device.NewFingerprint(groups...)
	go func() {
		<-ctx.Done()
		close(out)
	}()
	return out, nil
}

// Reserve succeeds for any requested IDs: there is no hardware to check. It
// sets NVIDIA_VISIBLE_DEVICES to the IDs, comma-separated, like the NVIDIA
// plugin, and mounts nothing. IDs this plugin never advertised are logged.
func (p *Plugin) Reserve(ids []string) (*device.ContainerReservation, error) {
	p.mu.RLock()
	for _, id := range ids {
		if !p.known[id] {
			p.logger.Warn("reserving a device this plugin did not advertise", "id", id)
		}
	}
	p.mu.RUnlock()
	return &device.ContainerReservation{
		Envs: map[string]string{VisibleDevicesEnv: strings.Join(ids, ",")},
	}, nil
}

// Stats streams a zero-utilisation reading for every device each interval
// until ctx is done.
func (p *Plugin) Stats(ctx context.Context, interval time.Duration) (<-chan *device.StatsResponse, error) {
	if interval <= 0 {
		interval = time.Second
	}
	out := make(chan *device.StatsResponse)
	go func() {
		defer close(out)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(interval)
			}
			select {
			case out <- &device.StatsResponse{Groups: p.stats(time.Now())}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// stats builds one reading of every group at now.
func (p *Plugin) stats(now time.Time) []*device.DeviceGroupStats {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*device.DeviceGroupStats, 0, len(p.groups))
	for _, g := range p.groups {
		gs := &device.DeviceGroupStats{
			Vendor:        g.Vendor,
			Type:          g.Type,
			Name:          g.Name,
			InstanceStats: make(map[string]*device.DeviceStats, len(g.Devices)),
		}
		for _, d := range g.Devices {
			zero := int64(0)
			util := &structs.StatValue{
				IntNumeratorVal: &zero,
				Unit:            "%",
				Desc:            "GPU utilization (fake)",
			}
			gs.InstanceStats[d.ID] = &device.DeviceStats{
				Summary: util,
				Stats: &structs.StatObject{
					Attributes: map[string]*structs.StatValue{"utilization": util},
				},
				Timestamp: now,
			}
		}
		out = append(out, gs)
	}
	return out
}
