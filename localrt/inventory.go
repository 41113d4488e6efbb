package localrt

import "fmt"

// request is one pending instance's GPU need, as the placement sees it.
type request struct {
	ID  string
	GPU string // GPU type
	N   int    // number of GPUs; 0 needs none
}

// decision is the outcome of plan: which requests to place now, and why each
// of the others waits.
type decision struct {
	// Place lists the IDs to place now, in queue order.
	Place []string
	// Reasons maps each request left pending to a human-readable reason.
	Reasons map[string]string
}

// plan decides which pending requests to place, given the inventory (total
// GPUs by type), the GPUs already in use by type, and the pending requests in
// the order they were started. It is pure: it reads its arguments and
// modifies none of them.
//
// The policy is FIFO per GPU type, without skipping: each GPU type is its own
// queue, and a request that does not fit blocks the later requests of the
// same type even if they would fit, so a big request is never starved by a
// stream of small ones. GPU types never block each other. A request that can
// never fit (an unknown type, or more GPUs than the inventory has of its
// type) blocks nothing: it waits forever with a reason saying so. A request
// for no GPUs is always placed.
func plan(total, used map[string]int, queue []request) decision {
	d := decision{Reasons: map[string]string{}}
	free := map[string]int{}
	for gpu, n := range total {
		free[gpu] = max(n-used[gpu], 0)
	}
	// waiting counts, by GPU type, the requests earlier in the queue that
	// could fit one day but are left pending in this pass.
	waiting := map[string]int{}
	for _, q := range queue {
		if q.N <= 0 {
			d.Place = append(d.Place, q.ID)
			continue
		}
		tot, known := total[q.GPU]
		switch {
		case !known || tot == 0:
			d.Reasons[q.ID] = fmt.Sprintf("no %s GPUs in this cluster's inventory", q.GPU)
		case q.N > tot:
			d.Reasons[q.ID] = fmt.Sprintf("needs %d %s GPUs, but this cluster has only %d", q.N, q.GPU, tot)
		case q.N > free[q.GPU]:
			d.Reasons[q.ID] = fmt.Sprintf("no free %s GPU: needs %d, %d of %d free", q.GPU, q.N, free[q.GPU], tot)
			waiting[q.GPU]++
		case waiting[q.GPU] > 0:
			d.Reasons[q.ID] = fmt.Sprintf("waiting behind %s of %s GPUs: needs %d, %d of %d free",
				plural(waiting[q.GPU], "earlier pending instance"), q.GPU, q.N, free[q.GPU], tot)
			waiting[q.GPU]++
		default:
			free[q.GPU] -= q.N
			d.Place = append(d.Place, q.ID)
		}
	}
	return d
}

// plural returns "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// GPUCount is the number of free and total GPUs of one type.
type GPUCount struct {
	Free  int
	Total int
}

// counts returns free and total GPUs for every type of the inventory.
func counts(total, used map[string]int) map[string]GPUCount {
	c := make(map[string]GPUCount, len(total))
	for gpu, n := range total {
		c[gpu] = GPUCount{Free: max(n-used[gpu], 0), Total: n}
	}
	return c
}
