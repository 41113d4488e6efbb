package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/thawhq/thaw/deploy"
)

// ErrNoMatch is returned (wrapped) by Resolve when none of the caller's
// deployments has that id or name.
var ErrNoMatch = errors.New("no deployment with that id or name")

// ErrAmbiguous is returned (wrapped) by Resolve when more than one of the
// caller's deployments has that id or name.
var ErrAmbiguous = errors.New("more than one deployment with that id or name")

// Resolve finds the caller's deployment that ref names: its deploy_id, its
// full name ("owner/my-model") or its model_name ("my-model"), compared
// exactly. It reads GET /deploy/list, so it costs one request.
func (c *Client) Resolve(ctx context.Context, ref string) (deploy.View, error) {
	if strings.TrimSpace(ref) == "" {
		return deploy.View{}, errors.New("empty deployment id or name")
	}
	views, err := c.List(ctx, "")
	if err != nil {
		return deploy.View{}, err
	}
	var found []deploy.View
	for _, v := range views {
		if v.ID == ref || (v.FullName != "" && v.FullName == ref) || v.ModelName == ref {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return deploy.View{}, fmt.Errorf("%w: %q", ErrNoMatch, ref)
	case 1:
		return found[0], nil
	}
	var which []string
	for _, v := range found {
		which = append(which, fmt.Sprintf("%s (%s)", v.ID, nameOf(v)))
	}
	return deploy.View{}, fmt.Errorf("%w: %q is %s; use the deploy id", ErrAmbiguous, ref, strings.Join(which, ", "))
}

// nameOf is a deployment's full name, or its model_name when the server
// sends no full_name.
func nameOf(v deploy.View) string {
	if v.FullName != "" {
		return v.FullName
	}
	return v.ModelName
}
