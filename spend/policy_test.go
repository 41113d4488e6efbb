package spend

import (
	"strings"
	"testing"

	"github.com/thawhq/thaw/meter"
)

func TestPolicy(t *testing.T) {
	p, err := ParsePolicy("alice=100, *=500")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		owner   string
		limit   float64
		wantErr string
		eff     float64
	}{
		{"alice", 50, "", 50},
		{"alice", 100, "", 100},
		{"alice", 101, "above the operator's cap for you, 100.00", 0},
		{"alice", 0, "requires a spending limit", 0},
		{"bob", 0, "requires a spending limit for you: at most 500.00", 0},
		{"bob", 499, "", 499},
		{"carol", -1, "must be 0 (no limit) or positive", 0},
	} {
		err := p.Check(tt.owner, tt.limit)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Check(%s, %v) = %v, want %q", tt.owner, tt.limit, err, tt.wantErr)
		}
		if err == nil {
			if got := p.Effective(meter.Account{Owner: tt.owner, SpendingLimitUSD: tt.limit}); got != tt.eff {
				t.Errorf("Effective(%s, %v) = %v, want %v", tt.owner, tt.limit, got, tt.eff)
			}
		}
	}
	if got := p.Effective(meter.Account{Owner: "bob"}); got != 500 {
		t.Errorf("bob with no limit of his own: %v, want the cap 500", got)
	}
	var none Policy
	if err := none.Check("dave", 0); err != nil || none.Effective(meter.Account{Owner: "dave"}) != 0 {
		t.Errorf("no caps: removing a limit is allowed and none applies")
	}
	for _, bad := range []string{"alice", "alice=", "=5", "alice=-3", "alice=x"} {
		if _, err := ParsePolicy(bad); err == nil {
			t.Errorf("ParsePolicy(%q): no error", bad)
		}
	}
}
