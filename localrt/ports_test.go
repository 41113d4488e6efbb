package localrt

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    PortRange
		wantErr bool
	}{
		{"20000-20999", PortRange{20000, 20999}, false},
		{" 8000 - 8001 ", PortRange{8000, 8001}, false},
		{"9000", PortRange{9000, 9000}, false},
		{"20999-20000", PortRange{}, true},
		{"0-10", PortRange{}, true},
		{"1-65536", PortRange{}, true},
		{"a-b", PortRange{}, true},
		{"", PortRange{}, true},
	}
	for _, tt := range tests {
		got, err := ParsePortRange(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePortRange(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
		}
		if err == nil {
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParsePortRange(%q) (-want +got):\n%s", tt.in, diff)
			}
		}
	}
}

// TestPickPort: ports come from the range only; one another process holds
// and one an instance of the runtime has are skipped, and with none left
// the error says why.
func TestPickPort(t *testing.T) {
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := other.Addr().(*net.TCPAddr).Port
	r, err := New(Config{Ports: PortRange{port, port}, Binary: "/bin/false", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.pickPortLocked(); err == nil || !strings.Contains(err.Error(), "1 by other processes") {
		t.Errorf("pick with the only port held elsewhere = %v, want an error naming other processes", err)
	}
	other.Close()
	got, err := r.pickPortLocked()
	if err != nil || got != port {
		t.Fatalf("pick = %d, %v; want %d", got, err, port)
	}
	if _, err := r.pickPortLocked(); err == nil || !strings.Contains(err.Error(), "1 used by this runtime's instances") {
		t.Errorf("pick with the only port given out = %v, want an error naming the runtime's instances", err)
	}
}

func TestNewRejectsBadPorts(t *testing.T) {
	if _, err := New(Config{Ports: PortRange{10, 5}, Binary: "/bin/false"}); err == nil {
		t.Error("New with ports 10-5 = nil error")
	}
}
