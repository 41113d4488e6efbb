package nomad

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// What thaw's calls need from its ACL token, in the words of a Nomad ACL
// policy, for PermissionError.Need. The README's policy grants exactly
// these.
const (
	needListJobs  = `namespace capability "list-jobs"`
	needReadJob   = `namespace capability "read-job"`
	needSubmitJob = `namespace capability "submit-job"`
	needNodeRead  = `node policy "read"`
)

// needVariable is the variables capability op (read, write, destroy,
// list) on path.
func needVariable(op, path string) string {
	return fmt.Sprintf("variables capability %q on %s", op, path)
}

// PermissionError is Nomad refusing a call (403) to thaw's ACL token: the
// token's policy lacks Need, or Nomad does not know the token at all.
// Runtime.Err, the deployment store and GPUs return it wrapped, so the
// operator reads which grant is missing instead of a bare "Permission
// denied".
type PermissionError struct {
	// Need is what the call needs, as a policy grants it, e.g.
	// `namespace capability "submit-job"`.
	Need string
	// Err is Nomad's answer.
	Err error
}

// Error says what the token lacks (or that Nomad does not know it) and
// Nomad's own answer.
func (e *PermissionError) Error() string {
	return e.Problem() + " (" + e.Err.Error() + ")"
}

// Unwrap returns Nomad's answer.
func (e *PermissionError) Unwrap() error { return e.Err }

// Problem is Error without Nomad's answer, for users: what the operator
// must fix.
func (e *PermissionError) Problem() string {
	var ue api.UnexpectedResponseError
	if errors.As(e.Err, &ue) && strings.Contains(ue.Body(), "ACL token not found") {
		return "Nomad does not know thaw's ACL token (thaw server --nomad-token)"
	}
	return "Nomad refuses thaw's ACL token: its policy needs " + e.Need
}

// denied returns err as a *PermissionError when it is Nomad's 403, and
// err unchanged otherwise (nil included).
func denied(err error, need string) error {
	if statusOf(err) != http.StatusForbidden {
		return err
	}
	return &PermissionError{Need: need, Err: err}
}

// statusOf is the HTTP status of Nomad's answer in err, 0 if none.
func statusOf(err error) int {
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode()
	}
	var uep *api.UnexpectedResponseError
	if errors.As(err, &uep) {
		return uep.StatusCode()
	}
	return 0
}
