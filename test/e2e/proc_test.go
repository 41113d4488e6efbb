package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWaitReady: the three ways a start ends, each saying why.
func TestWaitReady(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		p := StartT(t, ProcConfig{Args: []string{"sleep", "30"}, StopTimeout: time.Second})
		calls := 0
		err := p.WaitReady(5*time.Second, time.Millisecond, func() error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Errorf("WaitReady = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("exited", func(t *testing.T) {
		p := StartT(t, ProcConfig{Name: "crasher", Args: []string{"sh", "-c", "echo bad flag; exit 3"}})
		<-p.Done()
		err := p.WaitReady(5*time.Second, time.Millisecond, func() error { return errors.New("not yet") })
		for _, want := range []string{"crasher exited before it was ready", "exit status 3", "bad flag"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("WaitReady = %v, want an error containing %q", err, want)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		p := StartT(t, ProcConfig{Name: "sleeper", Args: []string{"sleep", "30"}, StopTimeout: time.Second})
		err := p.WaitReady(50*time.Millisecond, time.Millisecond, func() error { return errors.New("port closed") })
		for _, want := range []string{"sleeper not ready within 50ms", "port closed"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("WaitReady = %v, want an error containing %q", err, want)
			}
		}
	})
}
