package nomad

import (
	"errors"
	"strings"

	"github.com/thawhq/thaw/deploy"
)

// unreachable is what a deployment's status says while Nomad is out of reach.
const unreachable = "Nomad is unreachable: running instances keep serving; scaling resumes when it returns"

// Live is the status the deploy API shows, with Nomad's reachability added:
// while the runtime cannot reach Nomad, every deployment's instances.reason
// says so (warm deployments keep serving, but scaling waits for Nomad). It
// implements the deploy API's Live.
type Live struct {
	// Fleet is the status to add to (the fleet's). Required.
	Fleet interface {
		Live(deploy.Deployment) deploy.Live
	}
	// Runtime says whether Nomad is reachable (*Runtime). Required.
	Runtime interface{ Err() error }
}

// Live returns d's status from Fleet, with "Nomad is unreachable" appended
// to the reason while Runtime.Err is not nil. Not the error itself: it names
// Nomad's address and OS errors, which a user has no use for; the runtime
// logs it. When Nomad refuses thaw's ACL token, the reason says what the
// token lacks instead (PermissionError.Problem), which the user can pass on
// to the operator.
func (l Live) Live(d deploy.Deployment) deploy.Live {
	s := l.Fleet.Live(d)
	if err := l.Runtime.Err(); err != nil {
		why := unreachable
		var pe *PermissionError
		if errors.As(err, &pe) {
			why = pe.Problem() + ": scaling waits until the operator grants it"
			if strings.Contains(s.Instances.Reason, pe.Problem()) {
				return s // a pending instance's reason says it already
			}
		}
		s.Instances.Reason = strings.TrimPrefix(s.Instances.Reason+"; "+why, "; ")
	}
	return s
}
