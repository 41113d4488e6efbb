package nomad

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
)

type fixedLive deploy.Live

func (f fixedLive) Live(deploy.Deployment) deploy.Live { return deploy.Live(f) }

type errRuntime struct{ err error }

func (e errRuntime) Err() error { return e.err }

func TestLive(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:4646: connection refused")
	warm := deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Running: 1, Desired: 2, Pending: 1, Reason: "1 instance(s) starting (loading weights)"}}
	idle := deploy.Live{Status: deploy.StatusRunning}
	for _, tt := range []struct {
		name  string
		fleet deploy.Live
		err   error
		want  string // instances.reason
	}{
		{"reachable", warm, nil, warm.Instances.Reason},
		{"unreachable, with a reason", warm, refused, "1 instance(s) starting (loading weights); Nomad is unreachable: running instances keep serving; scaling resumes when it returns"},
		{"unreachable, no reason", idle, refused, "Nomad is unreachable: running instances keep serving; scaling resumes when it returns"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Live{Fleet: fixedLive(tt.fleet), Runtime: errRuntime{tt.err}}.Live(deploy.Deployment{})
			want := tt.fleet
			want.Instances.Reason = tt.want
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Live (-want +got):\n%s", diff)
			}
		})
	}
}
