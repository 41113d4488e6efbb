package meter_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/meter"
)

// TestDefaultPrices: every GPU type a deployment may ask for has a price.
func TestDefaultPrices(t *testing.T) {
	p := meter.DefaultPrices()
	for _, gpu := range deploy.GPUTypes {
		if r, err := p.Rate(gpu); err != nil || r <= 0 {
			t.Errorf("%s: rate %v, err %v; want a positive price", gpu, r, err)
		}
	}
	if len(p) != len(deploy.GPUTypes) {
		t.Errorf("%d prices for %d GPU types", len(p), len(deploy.GPUTypes))
	}
}

func TestParsePrices(t *testing.T) {
	got, err := meter.ParsePrices(" A100-80GB=1.5, H100-80GB = 2.4 ,L4-24GB=0")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(meter.Prices{"A100-80GB": 1.5, "H100-80GB": 2.4, "L4-24GB": 0}, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	merged := meter.DefaultPrices().Merge(got)
	if r, _ := merged.Rate("A100-80GB"); r != 1.5 {
		t.Errorf("merged A100 rate %v, want the override 1.5", r)
	}
	if r, _ := merged.Rate("B200-180GB"); r != meter.DefaultPrices()["B200-180GB"] {
		t.Errorf("merged B200 rate %v, want the default", r)
	}
	if p, err := meter.ParsePrices(""); err != nil || len(p) != 0 {
		t.Errorf(`ParsePrices("") = %v, %v; want an empty table`, p, err)
	}
	for _, bad := range []struct{ in, entry string }{
		{"A100-80GB=1.5,H100-80GB", "H100-80GB"},
		{"A100-80GB=abc", "A100-80GB=abc"},
		{"A100-80GB=-1", "A100-80GB=-1"},
		{"A100-80GB=NaN", "A100-80GB=NaN"},
		{"=2", "=2"},
		{"A100-80GB=1,A100-80GB=2", "A100-80GB=2"},
		{"A100-80GB=1,,H100-80GB=2", `""`},
	} {
		_, err := meter.ParsePrices(bad.in)
		if err == nil || !strings.Contains(err.Error(), bad.entry) {
			t.Errorf("ParsePrices(%q): err %v, want one naming %q", bad.in, err, bad.entry)
		}
	}
}

func TestRateUnknown(t *testing.T) {
	_, err := meter.Prices{"A100-80GB": 1}.Rate("T4-16GB")
	if !errors.Is(err, meter.ErrUnknownGPU) || !strings.Contains(err.Error(), "T4-16GB") {
		t.Errorf("err = %v, want ErrUnknownGPU naming T4-16GB", err)
	}
}
