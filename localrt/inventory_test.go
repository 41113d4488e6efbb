package localrt

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPlan(t *testing.T) {
	inv := map[string]int{"A100-80GB": 8, "H100-80GB": 2}
	tests := []struct {
		name  string
		used  map[string]int
		queue []request
		want  decision
	}{
		{
			name:  "empty queue",
			queue: nil,
			want:  decision{Reasons: map[string]string{}},
		},
		{
			name:  "fits",
			queue: []request{{"a", "A100-80GB", 2}, {"b", "H100-80GB", 2}},
			want:  decision{Place: []string{"a", "b"}, Reasons: map[string]string{}},
		},
		{
			name:  "fills the type exactly, then shortfall",
			used:  map[string]int{"A100-80GB": 4},
			queue: []request{{"a", "A100-80GB", 4}, {"b", "A100-80GB", 1}},
			want: decision{Place: []string{"a"}, Reasons: map[string]string{
				"b": "no free A100-80GB GPU: needs 1, 0 of 8 free",
			}},
		},
		{
			name:  "shortfall names what is free",
			used:  map[string]int{"A100-80GB": 7},
			queue: []request{{"a", "A100-80GB", 2}},
			want: decision{Reasons: map[string]string{
				"a": "no free A100-80GB GPU: needs 2, 1 of 8 free",
			}},
		},
		{
			name:  "unknown type waits forever and blocks nothing",
			queue: []request{{"a", "H200-141GB", 1}, {"b", "A100-80GB", 1}},
			want: decision{Place: []string{"b"}, Reasons: map[string]string{
				"a": "no H200-141GB GPUs in this cluster's inventory",
			}},
		},
		{
			name:  "more than the inventory has blocks nothing",
			queue: []request{{"a", "H100-80GB", 4}, {"b", "H100-80GB", 1}},
			want: decision{Place: []string{"b"}, Reasons: map[string]string{
				"a": "needs 4 H100-80GB GPUs, but this cluster has only 2",
			}},
		},
		{
			name: "FIFO per type: a big request blocks smaller ones of its type",
			used: map[string]int{"A100-80GB": 6},
			queue: []request{
				{"big", "A100-80GB", 4},
				{"small", "A100-80GB", 1},
				{"small2", "A100-80GB", 1},
				{"other", "H100-80GB", 1},
			},
			want: decision{Place: []string{"other"}, Reasons: map[string]string{
				"big":    "no free A100-80GB GPU: needs 4, 2 of 8 free",
				"small":  "waiting behind 1 earlier pending instance of A100-80GB GPUs: needs 1, 2 of 8 free",
				"small2": "waiting behind 2 earlier pending instances of A100-80GB GPUs: needs 1, 2 of 8 free",
			}},
		},
		{
			name:  "head placed, then the next in order",
			used:  map[string]int{"A100-80GB": 2},
			queue: []request{{"a", "A100-80GB", 4}, {"b", "A100-80GB", 2}, {"c", "A100-80GB", 1}},
			want: decision{Place: []string{"a", "b"}, Reasons: map[string]string{
				"c": "no free A100-80GB GPU: needs 1, 0 of 8 free",
			}},
		},
		{
			name:  "no GPUs needed: always placed",
			used:  map[string]int{"A100-80GB": 8},
			queue: []request{{"a", "A100-80GB", 0}, {"b", "", 0}},
			want:  decision{Place: []string{"a", "b"}, Reasons: map[string]string{}},
		},
		{
			name:  "a type with zero GPUs is unknown",
			queue: []request{{"a", "L4-24GB", 1}},
			want: decision{Reasons: map[string]string{
				"a": "no L4-24GB GPUs in this cluster's inventory",
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total := map[string]int{"L4-24GB": 0}
			for k, v := range inv {
				total[k] = v
			}
			used := map[string]int{}
			for k, v := range tc.used {
				used[k] = v
			}
			got := plan(total, used, tc.queue)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.used, used, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan modified used (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	got := counts(map[string]int{"A100-80GB": 8, "H100-80GB": 2}, map[string]int{"A100-80GB": 3, "L4-24GB": 1})
	want := map[string]GPUCount{"A100-80GB": {Free: 5, Total: 8}, "H100-80GB": {Free: 2, Total: 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}
