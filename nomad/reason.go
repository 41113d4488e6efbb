package nomad

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// placementReason turns the metrics of a failed placement
// (Evaluation.FailedTGAllocs[group]) into plain words for the deploy API,
// e.g. `no node has 2 free H100-80GB GPUs (Nomad: 1 node exhausted,
// "devices: no devices match request")`. gpu and numGPUs are the instance's
// request; the words stay true whatever Nomad's exact message is, and
// Nomad's own summary follows in parentheses for operators. Pure.
func placementReason(m *api.AllocationMetric, gpu string, numGPUs int) string {
	if m == nil {
		return "Nomad could not place the instance"
	}
	var plain string
	dims := slices.Sorted(maps.Keys(m.DimensionExhausted))
	cons := slices.Sorted(maps.Keys(m.ConstraintFiltered))
	switch {
	case m.NodesEvaluated == 0 && m.NodesInPool == 0 && len(m.NodesAvailable) == 0:
		plain = "no Nomad client node is up in the job's datacenters and node pool"
	case hasPrefix(dims, "devices") || hasSubstr(cons, "device") || hasSubstr(dims, "device"):
		plain = fmt.Sprintf("no node has %d free %s GPU%s", numGPUs, gpu, plural(numGPUs))
	case hasPrefix(dims, "cpu") || hasPrefix(dims, "memory"):
		plain = "no node has enough free CPU or memory for the model server"
	case len(m.QuotaExhausted) > 0:
		plain = "the Nomad quota of thaw's namespace is exhausted"
	case m.NodesEvaluated > 0 && m.NodesFiltered == m.NodesEvaluated:
		plain = "no node matches the job's constraints"
	default:
		plain = "Nomad could not place the instance"
	}
	var nomad []string
	if m.NodesEvaluated > 0 {
		nomad = append(nomad, fmt.Sprintf("%d node%s evaluated", m.NodesEvaluated, plural(m.NodesEvaluated)))
	}
	if m.NodesExhausted > 0 {
		nomad = append(nomad, fmt.Sprintf("%d exhausted", m.NodesExhausted))
	}
	if m.NodesFiltered > 0 {
		nomad = append(nomad, fmt.Sprintf("%d filtered", m.NodesFiltered))
	}
	for _, d := range dims {
		nomad = append(nomad, fmt.Sprintf("%q", d))
	}
	for _, c := range cons {
		nomad = append(nomad, fmt.Sprintf("filtered by %q", c))
	}
	nomad = append(nomad, m.QuotaExhausted...)
	if len(nomad) == 0 {
		return plain
	}
	return plain + " (Nomad: " + strings.Join(nomad, ", ") + ")"
}

func hasPrefix(keys []string, p string) bool {
	return slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, p) })
}

func hasSubstr(keys []string, s string) bool {
	return slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(k, s) })
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
