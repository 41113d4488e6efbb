package deploy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFollowRules: what a watch's state (versions at index at) does to the
// store, given what the store wrote itself meanwhile: a state older than
// the store's own write neither undoes it nor brings back what it deleted.
func TestFollowRules(t *testing.T) {
	type state struct {
		Ver  map[string]uint64 // the store's versions (each ID held)
		Tomb map[string]uint64
	}
	for _, tt := range []struct {
		name     string
		before   state
		remote   map[string]uint64 // the watch's versions
		at       uint64            // the watch's index
		wantRead []string
		after    state
		changed  bool
	}{
		{name: "new remote record", before: state{Ver: map[string]uint64{}},
			remote: map[string]uint64{"d-1": 5}, at: 5, wantRead: []string{"d-1"},
			after: state{Ver: map[string]uint64{"d-1": 5}}, changed: true},
		{name: "remote update", before: state{Ver: map[string]uint64{"d-1": 5}},
			remote: map[string]uint64{"d-1": 7}, at: 7, wantRead: []string{"d-1"},
			after: state{Ver: map[string]uint64{"d-1": 7}}, changed: true},
		{name: "own update newer than the watch", before: state{Ver: map[string]uint64{"d-1": 9}},
			remote: map[string]uint64{"d-1": 7}, at: 8,
			after: state{Ver: map[string]uint64{"d-1": 9}}},
		{name: "remote delete", before: state{Ver: map[string]uint64{"d-1": 5, "d-2": 6}},
			remote: map[string]uint64{"d-2": 6}, at: 8,
			after: state{Ver: map[string]uint64{"d-2": 6}}, changed: true},
		{name: "own create after the watch's index", before: state{Ver: map[string]uint64{"d-1": 9}},
			remote: map[string]uint64{}, at: 8,
			after: state{Ver: map[string]uint64{"d-1": 9}}},
		{name: "own delete after the watch's index", before: state{Ver: map[string]uint64{}, Tomb: map[string]uint64{"d-1": 5}},
			remote: map[string]uint64{"d-1": 5}, at: 6,
			after: state{Ver: map[string]uint64{}, Tomb: map[string]uint64{"d-1": 5}}},
		{name: "own delete seen by the watch", before: state{Ver: map[string]uint64{}, Tomb: map[string]uint64{"d-1": 5}},
			remote: map[string]uint64{}, at: 9,
			after: state{Ver: map[string]uint64{}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{byID: map[string]Deployment{}, ver: tt.before.Ver, tomb: map[string]uint64{}}
			for id, v := range tt.before.Tomb {
				s.tomb[id] = v
			}
			for id := range s.ver {
				s.byID[id] = Deployment{ID: id, ModelName: "own"}
			}
			read := staleIDs(s.ver, s.tomb, tt.remote)
			if diff := cmp.Diff(tt.wantRead, read); diff != "" {
				t.Errorf("records read (-want +got):\n%s", diff)
			}
			recs := map[string]Record{}
			for _, id := range read {
				recs[id] = Record{Deployment: Deployment{ModelName: "remote"}, Version: tt.remote[id]}
			}
			if got := s.applyLocked(recs, tt.remote, tt.at); got != tt.changed {
				t.Errorf("changed = %v, want %v", got, tt.changed)
			}
			if tt.after.Tomb == nil {
				tt.after.Tomb = map[string]uint64{}
			}
			if diff := cmp.Diff(tt.after, state{Ver: s.ver, Tomb: s.tomb}); diff != "" {
				t.Errorf("after (-want +got):\n%s", diff)
			}
			for id, d := range s.byID {
				if want := map[bool]string{true: "remote", false: "own"}[recs[id].Version > 0]; d.ModelName != want || d.ID != id {
					t.Errorf("%s holds %+v, want the %s copy", id, d, want)
				}
			}
			if len(s.byID) != len(s.ver) {
				t.Errorf("byID %d entries, ver %d", len(s.byID), len(s.ver))
			}
		})
	}
}
