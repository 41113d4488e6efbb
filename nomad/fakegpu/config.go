package fakegpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultIDPrefix prefixes every device ID unless the id_prefix option says
// otherwise. The NVIDIA plugin's IDs are NVML UUIDs ("GPU-<uuid>"); the fake
// ones keep the "GPU-" shape and say they are fake.
const DefaultIDPrefix = "GPU-fake"

// ErrBadSpec is returned (wrapped) for a malformed gpus option.
var ErrBadSpec = errors.New("fakegpu: bad gpus spec")

// Group is one advertised device group: Count identical GPUs named Model.
type Group struct {
	// Model is the device model name, what `${device.model}` matches,
	// e.g. "NVIDIA H100 80GB HBM3".
	Model string
	// Count is the number of device instances, at least 1.
	Count int
}

// ParseSpec parses the plugin's gpus option: comma-separated "model:count"
// entries, e.g. "NVIDIA H100 80GB HBM3:4,NVIDIA A100-SXM4-80GB:2". The count
// follows the last colon; blanks around entries are ignored; an empty spec
// means no GPUs. A model may appear only once.
func ParseSpec(spec string) ([]Group, error) {
	var groups []Group
	seen := map[string]bool{}
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		i := strings.LastIndex(entry, ":")
		if i < 0 {
			return nil, fmt.Errorf("%w: %q: want \"model:count\"", ErrBadSpec, entry)
		}
		model := strings.TrimSpace(entry[:i])
		count, err := strconv.Atoi(strings.TrimSpace(entry[i+1:]))
		if err != nil || count < 1 {
			return nil, fmt.Errorf("%w: %q: count must be a positive integer", ErrBadSpec, entry)
		}
		if model == "" {
			return nil, fmt.Errorf("%w: %q: empty model name", ErrBadSpec, entry)
		}
		if seen[model] {
			return nil, fmt.Errorf("%w: model %q listed twice", ErrBadSpec, model)
		}
		seen[model] = true
		groups = append(groups, Group{Model: model, Count: count})
	}
	return groups, nil
}

// DeviceID returns the ID of instance i (0-based) of group g (0-based, in
// spec order): "<prefix>-<g>-<i>", unique on the node.
func DeviceID(prefix string, g, i int) string {
	return fmt.Sprintf("%s-%d-%d", prefix, g, i)
}
