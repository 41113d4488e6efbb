package e2e

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const metricsText = `# HELP thaw_requests_held Requests held.
# TYPE thaw_requests_held gauge
thaw_requests_held{deploy_id="d1",model="alice/m"} 3
thaw_requests_held{deploy_id="d2",model="bob/m"} 2
thaw_requests_inflight{deploy_id="d1"} 1
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a \"quoted\" {name}"} 4 1700000000000
process_open_fds 12
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := map[string]string{"thaw_requests_held": "gauge", "vllm:num_requests_waiting": "gauge"}
	if diff := cmp.Diff(wantTypes, m.Types); diff != "" {
		t.Errorf("Types (-want +got):\n%s", diff)
	}
	if n := len(m.Samples); n != 5 {
		t.Fatalf("%d samples, want 5", n)
	}
	want := Sample{
		Name:   "vllm:num_requests_waiting",
		Labels: map[string]string{"engine": "0", "model_name": `a \"quoted\" {name}`},
		Value:  4,
		Line:   `vllm:num_requests_waiting{engine="0",model_name="a \"quoted\" {name}"} 4 1700000000000`,
	}
	if diff := cmp.Diff(want, m.Samples[3]); diff != "" {
		t.Errorf("a sample with a timestamp and braces in a label (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name      string
		labels    map[string]string
		want      float64
		wantFound bool
	}{
		{"thaw_requests_held", nil, 5, true},
		{"thaw_requests_held", map[string]string{"deploy_id": "d1"}, 3, true},
		{"thaw_requests_held", map[string]string{"deploy_id": "d3"}, 0, false},
		{"process_open_fds", nil, 12, true},
		{"thaw_requests", nil, 0, false}, // a prefix is not a name
	} {
		got, found := m.Sum(tc.name, tc.labels)
		if got != tc.want || found != tc.wantFound {
			t.Errorf("Sum(%s, %v) = %v, %v; want %v, %v", tc.name, tc.labels, got, found, tc.want, tc.wantFound)
		}
	}
}

func TestParseMetricsRefusesAValuelessLine(t *testing.T) {
	for _, in := range []string{"thaw_up\n", "thaw_up{a=\"b\"}\n", "thaw_up x\n", "thaw_up{a=\"b\" 1\n"} {
		if _, err := ParseMetrics(strings.NewReader(in)); err == nil {
			t.Errorf("ParseMetrics(%q) = nil error, want one", in)
		}
	}
}
