package fakegpu

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/device"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/msgpack"
)

// dispense serves p over gRPC in-process, the way the agent talks to the
// built binary, and returns the agent-side client.
func dispense(t *testing.T, p *Plugin) device.DevicePlugin {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, true, map[string]plugin.Plugin{
		base.PluginTypeBase:   &base.PluginBase{Impl: p},
		base.PluginTypeDevice: &device.PluginDevice{Impl: p},
	})
	// Close asks the server to shut down over the connection, which stops
	// it; calling server.Stop as well races inside go-plugin.
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(base.PluginTypeDevice)
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	return raw.(device.DevicePlugin)
}

// agentConfig encodes a plugin config block the way the agent does: a cty
// object, msgpack-encoded.
func agentConfig(t *testing.T, attrs map[string]string) *base.Config {
	t.Helper()
	vals := map[string]cty.Value{}
	for k, v := range attrs {
		vals[k] = cty.StringVal(v)
	}
	obj := cty.ObjectVal(vals)
	buf, err := msgpack.Marshal(obj, obj.Type())
	if err != nil {
		t.Fatal(err)
	}
	return &base.Config{PluginConfig: buf, ApiVersion: device.ApiVersion010}
}

// fingerprintOf returns what the agent sees as the first fingerprint.
func fingerprintOf(t *testing.T, dp device.DevicePlugin) []*device.DeviceGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch, err := dp.Fingerprint(ctx)
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	select {
	case resp := <-ch:
		if resp.Error != nil {
			t.Fatalf("fingerprint error: %v", resp.Error)
		}
		return resp.Devices
	case <-ctx.Done():
		t.Fatal("no fingerprint within 5s")
		return nil
	}
}

func TestPluginInfo(t *testing.T) {
	dp := dispense(t, New(nil))
	info, err := dp.PluginInfo()
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != PluginName || info.Type != base.PluginTypeDevice {
		t.Errorf("PluginInfo = %+v, want name %q type %q", info, PluginName, base.PluginTypeDevice)
	}
	if _, err := dp.ConfigSchema(); err != nil {
		t.Errorf("ConfigSchema: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	type group struct {
		Vendor, Type, Name string
		IDs                []string
	}
	tests := []struct {
		name  string
		attrs map[string]string
		want  []group
	}{
		{
			name:  "cluster default",
			attrs: map[string]string{"gpus": "NVIDIA H100 80GB HBM3:4,NVIDIA A100-SXM4-80GB:2"},
			want: []group{
				{"nvidia", "gpu", "NVIDIA H100 80GB HBM3", []string{"GPU-fake-0-0", "GPU-fake-0-1", "GPU-fake-0-2", "GPU-fake-0-3"}},
				{"nvidia", "gpu", "NVIDIA A100-SXM4-80GB", []string{"GPU-fake-1-0", "GPU-fake-1-1"}},
			},
		},
		{
			name:  "id prefix",
			attrs: map[string]string{"gpus": "NVIDIA L4:1", "id_prefix": "GPU-node2"},
			want:  []group{{"nvidia", "gpu", "NVIDIA L4", []string{"GPU-node2-0-0"}}},
		},
		{name: "no gpus", attrs: map[string]string{"gpus": ""}, want: []group{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := dispense(t, New(nil))
			if err := dp.SetConfig(agentConfig(t, tt.attrs)); err != nil {
				t.Fatalf("SetConfig: %v", err)
			}
			got := []group{}
			for _, g := range fingerprintOf(t, dp) {
				if err := g.Validate(); err != nil {
					t.Errorf("group %q invalid: %v", g.Name, err)
				}
				var ids []string
				for _, d := range g.Devices {
					if !d.Healthy {
						t.Errorf("device %s unhealthy", d.ID)
					}
					ids = append(ids, d.ID)
				}
				sort.Strings(ids)
				got = append(got, group{g.Vendor, g.Type, g.Name, ids})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("fingerprint (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetConfigRejectsBadSpec(t *testing.T) {
	p := New(nil)
	err := p.SetConfig(agentConfig(t, map[string]string{"gpus": "NVIDIA H100 80GB HBM3"}))
	if !errors.Is(err, ErrBadSpec) {
		t.Fatalf("SetConfig error = %v, want ErrBadSpec", err)
	}
}

func TestFingerprintStreamEndsWithContext(t *testing.T) {
	p := New(nil)
	if err := p.SetConfig(agentConfig(t, map[string]string{"gpus": "NVIDIA L4:1"})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := p.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	// Nothing is expected to happen, so watch for it for a while. (This
	// module targets Go 1.24, before testing/synctest, whose Wait would
	// make this exact.)
	select {
	case <-ch:
		t.Fatal("stream closed or sent again before ctx was cancelled")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("got a second fingerprint, want the stream closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed 5s after cancel")
	}
}

func TestReserve(t *testing.T) {
	dp := dispense(t, New(nil))
	if err := dp.SetConfig(agentConfig(t, map[string]string{"gpus": "NVIDIA H100 80GB HBM3:4"})); err != nil {
		t.Fatal(err)
	}
	for _, ids := range [][]string{
		{"GPU-fake-0-1", "GPU-fake-0-3"},
		{"GPU-unknown"},
	} {
		res, err := dp.Reserve(ids)
		if err != nil {
			t.Fatalf("Reserve(%v): %v", ids, err)
		}
		want := map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(ids, ",")}
		if diff := cmp.Diff(want, res.Envs); diff != "" {
			t.Errorf("Reserve(%v) envs (-want +got):\n%s", ids, diff)
		}
		if len(res.Mounts) != 0 || len(res.Devices) != 0 {
			t.Errorf("Reserve(%v) mounts %v devices %v, want none", ids, res.Mounts, res.Devices)
		}
	}
}

func TestStats(t *testing.T) {
	dp := dispense(t, New(nil))
	if err := dp.SetConfig(agentConfig(t, map[string]string{"gpus": "NVIDIA H100 80GB HBM3:2,NVIDIA L4:1"})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch, err := dp.Stats(ctx, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case resp := <-ch:
			if resp == nil || resp.Error != nil {
				t.Fatalf("stats response %+v", resp)
			}
			got := map[string]int{}
			for _, g := range resp.Groups {
				got[g.Name] = len(g.InstanceStats)
				for id, s := range g.InstanceStats {
					if s.Summary == nil || s.Summary.IntNumeratorVal == nil || *s.Summary.IntNumeratorVal != 0 {
						t.Errorf("%s summary = %+v, want 0%%", id, s.Summary)
					}
				}
			}
			want := map[string]int{"NVIDIA H100 80GB HBM3": 2, "NVIDIA L4": 1}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stats instances per group (-want +got):\n%s", diff)
			}
		case <-ctx.Done():
			t.Fatal("no stats within 5s")
		}
	}
}
