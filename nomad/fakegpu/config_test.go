package fakegpu

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    []Group
		wantErr bool
	}{
		{name: "empty", spec: "", want: nil},
		{name: "blank entries", spec: " , ,", want: nil},
		{
			name: "two models",
			spec: "NVIDIA H100 80GB HBM3:4,NVIDIA A100-SXM4-80GB:2",
			want: []Group{{"NVIDIA H100 80GB HBM3", 4}, {"NVIDIA A100-SXM4-80GB", 2}},
		},
		{
			name: "spaces and colon in model",
			spec: "  weird:model : 1 , NVIDIA L4:8 ",
			want: []Group{{"weird:model", 1}, {"NVIDIA L4", 8}},
		},
		{name: "no count", spec: "NVIDIA L4", wantErr: true},
		{name: "zero count", spec: "NVIDIA L4:0", wantErr: true},
		{name: "negative count", spec: "NVIDIA L4:-1", wantErr: true},
		{name: "bad count", spec: "NVIDIA L4:two", wantErr: true},
		{name: "empty model", spec: ":2", wantErr: true},
		{name: "duplicate", spec: "NVIDIA L4:1,NVIDIA L4:2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec(tt.spec)
			if tt.wantErr {
				if !errors.Is(err, ErrBadSpec) {
					t.Fatalf("ParseSpec(%q) error = %v, want ErrBadSpec", tt.spec, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.spec, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSpec(%q) (-want +got):\n%s", tt.spec, diff)
			}
		})
	}
}
