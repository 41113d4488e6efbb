package demand

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestInstancesTargets steps through an instance's life as the fleet
// reports it (endpoint updates, the ready list) and checks the IDs the
// scraper gets.
func TestInstancesTargets(t *testing.T) {
	var b Instances
	ready := map[string][]string{}
	list := func() map[string][]string { return ready }
	check := func(step string, want []Target) {
		t.Helper()
		if d := cmp.Diff(want, b.Targets(list)); d != "" {
			t.Errorf("%s: targets (-want +got):\n%s", step, d)
		}
	}

	check("nothing ready", nil)

	b.SetEndpoints("d1", 4, map[string]string{"i1": "h:1", "i2": "h:2"})
	ready["d1"] = []string{"h:2", "h:1"}
	check("two ready", []Target{{"d1", "i1", "h:1"}, {"d1", "i2", "h:2"}})

	// A scale-down: i2 drains (no longer routed to) but still serves.
	b.SetEndpoints("d1", 4, map[string]string{"i1": "h:1"})
	check("i2 draining", []Target{{"d1", "i1", "h:1"}, {"d1", "i2", "h:2"}})

	// i2 stopped; a new instance i3 of another deployment gets its port.
	ready["d1"] = []string{"h:1"}
	check("i2 gone", []Target{{"d1", "i1", "h:1"}})
	b.SetEndpoints("d2", 4, map[string]string{"i3": "h:2"})
	ready["d2"] = []string{"h:2"}
	check("i3 at i2's address", []Target{{"d1", "i1", "h:1"}, {"d2", "i3", "h:2"}})

	// A new instance of d1 at the address of one that ended between two
	// scrapes: the ID tells them apart.
	b.SetEndpoints("d1", 4, map[string]string{"i4": "h:1"})
	check("i4 replaced i1 at h:1", []Target{{"d1", "i4", "h:1"}, {"d2", "i3", "h:2"}})

	// The deployment is deleted: the fleet removes it, its instance drains.
	b.Remove("d2")
	check("d2 removed, i3 draining", []Target{{"d1", "i4", "h:1"}, {"d2", "i3", "h:2"}})
	delete(ready, "d2")
	check("i3 stopped", []Target{{"d1", "i4", "h:1"}})

	// An address listed with no ID learnt: its load counts, its tokens not.
	ready["d3"] = []string{"h:9"}
	check("unknown instance", []Target{{"d1", "i4", "h:1"}, {"d3", "", "h:9"}})
	delete(ready, "d3")

	// An instance that becomes ready while the list is being read (the
	// fleet sends its update after the list was taken) keeps its ID for
	// the next round.
	racy := func() map[string][]string {
		snapshot := map[string][]string{"d1": ready["d1"]}
		b.SetEndpoints("d5", 4, map[string]string{"i5": "h:5"})
		ready["d5"] = []string{"h:5"}
		return snapshot
	}
	if d := cmp.Diff([]Target{{"d1", "i4", "h:1"}}, b.Targets(racy)); d != "" {
		t.Errorf("round that raced i5's update (-want +got):\n%s", d)
	}
	check("i5 in the next round", []Target{{"d1", "i4", "h:1"}, {"d5", "i5", "h:5"}})

	select {
	case <-b.Drained("d1", "i4"):
	default:
		t.Error("Drained blocks: the fleet's drain would wait for the scraper")
	}
}
