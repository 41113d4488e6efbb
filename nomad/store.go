package nomad

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
)

// DefaultStorePrefix is where VariableStore keeps deployment records.
const DefaultStorePrefix = "thaw/records"

// recordItem is the Variable item holding a record's JSON.
const recordItem = "record"

// VariableStore keeps deployment records in Nomad Variables, one Variable
// per deployment (<Prefix>/<deploy id>, item "record"): durable and
// replicated by Nomad's servers (Raft), encrypted at rest, and needing no
// other infrastructure than the Nomad thaw already runs on. It implements
// deploy.Backend. Records hold HF tokens, so thaw's ACL token needs
// read/write on Prefix and no job's policy should grant it.
type VariableStore struct {
	Client    *api.Client
	Prefix    string // default DefaultStorePrefix
	Namespace string // default: the client's
}

func (v VariableStore) path(id string) string {
	p := v.Prefix
	if p == "" {
		p = DefaultStorePrefix
	}
	return p + "/" + id
}

func (v VariableStore) prefix() string { return strings.TrimSuffix(v.path(""), "/") }

func (v VariableStore) q() *api.QueryOptions { return &api.QueryOptions{Namespace: v.Namespace} }

func (v VariableStore) w() *api.WriteOptions { return &api.WriteOptions{Namespace: v.Namespace} }

// Load reads every record under Prefix.
func (v VariableStore) Load() ([]deploy.Deployment, error) {
	metas, _, err := v.Client.Variables().PrefixList(v.prefix()+"/", v.q())
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list deployments in nomad variables: %w", denied(err, needVariable("list", v.prefix()+"/*")))
	}
	out := make([]deploy.Deployment, 0, len(metas))
	for _, m := range metas {
		vr, _, err := v.Client.Variables().Read(m.Path, v.q())
		if err != nil {
			if isNotFound(err) || errors.Is(err, api.ErrVariablePathNotFound) {
				continue // deleted meanwhile
			}
			return nil, fmt.Errorf("read %s: %w", m.Path, denied(err, needVariable("read", v.prefix()+"/*")))
		}
		var d deploy.Deployment
		if err := json.Unmarshal([]byte(vr.Items[recordItem]), &d); err != nil {
			return nil, fmt.Errorf("parse %s: %w", m.Path, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Put writes d's record.
func (v VariableStore) Put(_ []deploy.Deployment, d deploy.Deployment) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode deployment: %w", err)
	}
	vr := &api.Variable{Namespace: v.Namespace, Path: v.path(d.ID), Items: api.VariableItems{recordItem: string(b)}}
	if _, _, err := v.Client.Variables().Update(vr, v.w()); err != nil {
		return fmt.Errorf("save deployment %s in nomad variables: %w", d.ID, denied(err, needVariable("write", v.prefix()+"/*")))
	}
	return nil
}

// Delete removes id's record.
func (v VariableStore) Delete(_ []deploy.Deployment, id string) error {
	if _, err := v.Client.Variables().Delete(v.path(id), v.w()); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete deployment %s from nomad variables: %w", id, denied(err, needVariable("destroy", v.prefix()+"/*")))
	}
	return nil
}

var _ deploy.Backend = VariableStore{}
