package deploy

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseModelRef(t *testing.T) {
	tests := []struct {
		in   string
		want ModelRef // zero: ErrBadModelRef
	}{
		{"alice/m", ModelRef{Owner: "alice", Name: "m"}},
		{"alice/Llama-3.1-8B", ModelRef{Owner: "alice", Name: "Llama-3.1-8B"}},
		{"deploy_id:d-123", ModelRef{ID: "d-123"}},
		{"deploy_id:", ModelRef{}},
		{"alice", ModelRef{}},
		{"", ModelRef{}},
		{"/m", ModelRef{}},
		{"alice/", ModelRef{}},
		{"alice/m/x", ModelRef{}},
		{"deployid:d-1", ModelRef{}},
	}
	for _, tc := range tests {
		got, err := ParseModelRef(tc.in)
		if tc.want == (ModelRef{}) {
			if !errors.Is(err, ErrBadModelRef) {
				t.Errorf("ParseModelRef(%q) = %+v, %v; want ErrBadModelRef", tc.in, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseModelRef(%q) error %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseModelRef(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("ParseModelRef(%q).String() = %q", tc.in, got.String())
		}
	}
}

// TestResolveModelRef: a caller reaches its own deployments by either form;
// another user's is reported as not found, the same as one that does not
// exist.
func TestResolveModelRef(t *testing.T) {
	all := []Deployment{
		{ID: "d1", Owner: "alice", ModelName: "m"},
		{ID: "d2", Owner: "bob", ModelName: "m"},
	}
	find := func(ref ModelRef) (Deployment, string, bool) {
		for _, d := range all {
			if d.ID == ref.ID || (ref.ID == "" && d.Owner == ref.Owner && d.ModelName == ref.Name) {
				return d, d.Owner, true
			}
		}
		return Deployment{}, "", false
	}
	tests := []struct {
		user, ref string
		wantID    string
		wantErr   error
	}{
		{"alice", "alice/m", "d1", nil},
		{"alice", "deploy_id:d1", "d1", nil},
		{"bob", "bob/m", "d2", nil},
		{"alice", "bob/m", "", ErrNotFound},
		{"alice", "deploy_id:d2", "", ErrNotFound},
		{"alice", "alice/nope", "", ErrNotFound},
		{"alice", "deploy_id:d9", "", ErrNotFound},
		{"alice", "m", "", ErrBadModelRef},
	}
	for _, tc := range tests {
		d, err := ResolveModelRef(tc.user, tc.ref, find)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || d.ID != tc.wantID {
			t.Errorf("ResolveModelRef(%q, %q) = %q, %v; want %q, %v", tc.user, tc.ref, d.ID, err, tc.wantID, tc.wantErr)
		}
	}
}
