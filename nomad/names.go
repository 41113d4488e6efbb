package nomad

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
)

// DefaultNamesPrefix is where VariableStore reserves model names: one
// Variable per owner and lower-cased model_name, created only if absent, so
// that two replicas creating the same name at once cannot both succeed.
const DefaultNamesPrefix = "thaw/names"

// Items of a name reservation: the deployment holding the name, and the
// owner and model_name as given, for an operator reading Nomad.
const (
	nameDeployItem = "deploy_id"
	nameOwnerItem  = "owner"
	nameModelItem  = "model_name"
)

// nameGrace is how old a reservation whose deployment record does not exist
// must be before another deployment may take the name. A replica writes the
// record right after the reservation, so a younger one may be a create in
// flight; an older one was left by a replica that died or lost Nomad
// between the two writes of a create or a delete.
const nameGrace = time.Minute

// maxVariablePath is the longest path Nomad takes.
const maxVariablePath = 128

func (v VariableStore) namesPrefix() string {
	if v.NamesPrefix == "" {
		return DefaultNamesPrefix
	}
	return strings.TrimSuffix(v.NamesPrefix, "/")
}

// namePath is the reservation of owner's model name, regardless of case.
// Nomad takes only [a-zA-Z0-9-_~/] in a path, up to 128 bytes: other bytes
// are escaped as _xx, and a path still too long is replaced by a hash
// ("~" never comes out of the escaping, so the two forms cannot meet).
func namePath(prefix, owner, model string) string {
	p := prefix + "/" + escapeSegment(owner) + "/" + escapeSegment(strings.ToLower(model))
	if len(p) <= maxVariablePath {
		return p
	}
	sum := sha256.Sum256([]byte(owner + "/" + strings.ToLower(model)))
	return prefix + "/~" + hex.EncodeToString(sum[:20])
}

// escapeSegment keeps letters, digits and '-' and writes every other byte
// as '_' and two hex digits.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02x", c)
	}
	return b.String()
}

// staleReservation reports whether a reservation last written at modified
// (Nomad's clock, unix nanoseconds) whose deployment record does not exist
// may be taken at now.
func staleReservation(modified int64, now time.Time) bool {
	return now.Sub(time.Unix(0, modified)) > nameGrace
}

// reserveName creates d's name reservation, which must not exist, or takes
// over a stale one; it returns an error wrapping deploy.ErrDuplicate when
// another deployment holds the name.
func (v VariableStore) reserveName(d deploy.Deployment) error {
	path := namePath(v.namesPrefix(), d.Owner, d.ModelName)
	vr := &api.Variable{Namespace: v.Namespace, Path: path, Items: api.VariableItems{
		nameDeployItem: d.ID, nameOwnerItem: d.Owner, nameModelItem: d.ModelName}}
	for attempt := 0; ; attempt++ {
		_, _, err := v.Client.Variables().CheckedCreate(vr, v.w())
		if _, ok := errors.AsType[api.ErrCASConflict](err); ok {
			err = v.takeStaleName(vr)
			if errors.Is(err, errReleased) && attempt == 0 {
				continue
			}
			if errors.Is(err, errReleased) {
				err = fmt.Errorf("model name %q of %s: %w", d.ModelName, d.Owner, deploy.ErrDuplicate)
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("reserve model name in nomad variables: %w", denied(err, needVariable("write", v.namesPrefix()+"/*")))
		}
		return nil
	}
}

// errReleased: the reservation in the way was deleted before it could be
// read; creating it again may succeed.
var errReleased = errors.New("name reservation released meanwhile")

// takeStaleName writes the reservation vr over the one at its path when
// that one is stale (its deployment is gone and it is older than
// nameGrace), with check-and-set so that one replica at most takes it.
func (v VariableStore) takeStaleName(vr *api.Variable) error {
	taken := fmt.Errorf("model name %q of %s: %w", vr.Items[nameModelItem], vr.Items[nameOwnerItem], deploy.ErrDuplicate)
	old, _, err := v.Client.Variables().Read(vr.Path, v.q())
	if errors.Is(err, api.ErrVariablePathNotFound) {
		return errReleased
	}
	if err != nil {
		return fmt.Errorf("read model name reservation: %w", denied(err, needVariable("read", v.namesPrefix()+"/*")))
	}
	if !staleReservation(old.ModifyTime, v.now()) {
		return taken
	}
	if _, err := v.Read(old.Items[nameDeployItem]); !errors.Is(err, deploy.ErrNotFound) {
		if err != nil {
			return err
		}
		return taken
	}
	vr.ModifyIndex = old.ModifyIndex
	_, _, err = v.Client.Variables().CheckedUpdate(vr, v.w())
	if _, ok := errors.AsType[api.ErrCASConflict](err); ok {
		return taken
	}
	if err != nil {
		return fmt.Errorf("reserve model name in nomad variables: %w", denied(err, needVariable("write", v.namesPrefix()+"/*")))
	}
	return nil
}

// releaseName deletes d's name reservation if d holds it. It is best
// effort: a reservation left behind goes stale (takeStaleName) once d's
// record is gone.
func (v VariableStore) releaseName(d deploy.Deployment) {
	path := namePath(v.namesPrefix(), d.Owner, d.ModelName)
	old, _, err := v.Client.Variables().Read(path, v.q())
	if err != nil || old.Items[nameDeployItem] != d.ID {
		return
	}
	_, _ = v.Client.Variables().CheckedDelete(path, old.ModifyIndex, v.w())
}
