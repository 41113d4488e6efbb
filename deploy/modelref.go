package deploy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/thawhq/thaw/httperr"
)

// ModelRefUsage says how a request names a model, for the messages that
// refuse one: the grammar ParseModelRef accepts.
const ModelRefUsage = `"<owner>/<model_name>" or "deploy_id:<id>"`

// deployIDForm starts a model reference by deployment id.
const deployIDForm = "deploy_id:"

// ErrBadModelRef is returned (wrapped) by ParseModelRef for a string that is
// neither form of a model reference.
var ErrBadModelRef = errors.New("malformed model reference")

// ModelRef is how an inference request names a deployment: by id
// ("deploy_id:<id>") or by owner and model name ("<owner>/<model_name>",
// the deployment's FullName). Either ID is set, or Owner and Name are.
type ModelRef struct {
	ID          string
	Owner, Name string
}

// ParseModelRef parses a model reference. The name form has exactly one
// '/', with a non-empty owner and name on either side; the id form a
// non-empty id. Anything else is ErrBadModelRef: it can name no deployment.
func ParseModelRef(s string) (ModelRef, error) {
	if id, ok := strings.CutPrefix(s, deployIDForm); ok {
		if id == "" {
			return ModelRef{}, fmt.Errorf("%w %q: empty id", ErrBadModelRef, httperr.Clip(s))
		}
		return ModelRef{ID: id}, nil
	}
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return ModelRef{}, fmt.Errorf("%w %q: want %s", ErrBadModelRef, httperr.Clip(s), ModelRefUsage)
	}
	return ModelRef{Owner: owner, Name: name}, nil
}

// String returns r as a request spells it.
func (r ModelRef) String() string {
	if r.ID != "" {
		return deployIDForm + r.ID
	}
	return r.Owner + "/" + r.Name
}

// ResolveModelRef finds the deployment that the model reference s names
// among user's deployments. find looks a parsed reference up among every
// user's deployments and returns what it found and its owner.
//
// This is the one place of the ownership rule: another user's deployment is
// reported exactly as one that does not exist (ErrNotFound), so that a
// reference never tells a caller whether someone else has that name or id.
// A string that is not a model reference is ErrBadModelRef.
func ResolveModelRef[T any](user, s string, find func(ModelRef) (found T, owner string, ok bool)) (T, error) {
	var zero T
	ref, err := ParseModelRef(s)
	if err != nil {
		return zero, err
	}
	found, owner, ok := find(ref)
	if !ok || owner != user {
		return zero, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	return found, nil
}
