package meter

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Prices is USD per GPU-hour by thaw GPU type ("A100-80GB", "H100-80GB",
// "L4-24GB", "L40S-48GB", "H200-141GB", "B200-180GB": deploy.GPUTypes).
type Prices map[string]float64

// ErrUnknownGPU is returned when a GPU type has no price: a window that
// cannot be priced is an error, not a guess.
var ErrUnknownGPU = errors.New("meter: no price for GPU type")

// DefaultPrices returns thaw's default price table, USD per GPU-hour.
//
// Source, and how sure it is: DeepInfra bills custom LLM deployments per
// GPU-hour of uptime ("pay per GPU/hours your model is up", DeepInfra's
// "Custom LLMs" documentation), but no published per-GPU-type price for
// them could be found for this table, so every figure below is an ESTIMATE,
// labelled as such, for operators to override (ParsePrices):
//
//   - A100-80GB 1.50 and H100-80GB 2.40: the rates DeepInfra listed for
//     custom LLM deployments on its pricing page in 2024 (recalled, not
//     re-checked); a 2026 third-party survey of GPU-hour pricing gives
//     "about $1.98/hr" for an H100 at DeepInfra, and a 2026 summary of
//     DeepInfra's offer gives dedicated A100 rentals "from $0.89/hour" and
//     B300 "up to $4.20/hour". Those are rentals, not deployments, so the
//     higher deployment rates are kept.
//   - H200-141GB 3.00, B200-180GB 4.00: estimates placed between the H100
//     rate and DeepInfra's quoted B300 ceiling, in the ratio other
//     providers' serverless rate cards put these GPUs (RunPod: A100 0.00076,
//     H100 0.00116, H200 0.00155, B200 0.00240 USD/s).
//   - L4-24GB 0.50 and L40S-48GB 1.00: estimates, about a third and two
//     thirds of the A100 rate, as on those rate cards.
func DefaultPrices() Prices {
	return Prices{
		"A100-80GB":  1.50,
		"H100-80GB":  2.40,
		"H200-141GB": 3.00,
		"B200-180GB": 4.00,
		"L4-24GB":    0.50,
		"L40S-48GB":  1.00,
	}
}

// ParsePrices parses operator overrides, "A100-80GB=1.5,H100-80GB=2.4":
// comma-separated GPU=USD-per-GPU-hour pairs (spaces around them allowed,
// an empty string is an empty table). Prices must be finite and >= 0; an
// error names the bad entry. The result holds only the given types: merge
// it over DefaultPrices with Merge.
func ParsePrices(s string) (Prices, error) {
	p := Prices{}
	if strings.TrimSpace(s) == "" {
		return p, nil
	}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		gpu, val, ok := strings.Cut(entry, "=")
		gpu, val = strings.TrimSpace(gpu), strings.TrimSpace(val)
		if !ok || gpu == "" || val == "" {
			return nil, fmt.Errorf("meter: price %q: want GPU=USD-per-GPU-hour", entry)
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("meter: price %q: %q is not a price in USD per GPU-hour (a number >= 0)", entry, val)
		}
		if _, dup := p[gpu]; dup {
			return nil, fmt.Errorf("meter: price %q: %s given twice", entry, gpu)
		}
		p[gpu] = v
	}
	return p, nil
}

// Merge returns a copy of p with over's prices replacing or adding to its
// own.
func (p Prices) Merge(over Prices) Prices {
	out := maps.Clone(p)
	if out == nil {
		out = Prices{}
	}
	maps.Copy(out, over)
	return out
}

// Rate is gpu's price in USD per GPU-hour; an unknown GPU type is
// ErrUnknownGPU.
func (p Prices) Rate(gpu string) (float64, error) {
	r, ok := p[gpu]
	if !ok {
		return 0, fmt.Errorf("%w %q (priced: %s)", ErrUnknownGPU, gpu, strings.Join(slices.Sorted(maps.Keys(p)), ", "))
	}
	return r, nil
}
