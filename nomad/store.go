package nomad

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
)

// DefaultStorePrefix is where VariableStore keeps deployment records.
const DefaultStorePrefix = "thaw/records"

// recordItem is the Variable item holding a record's JSON.
const recordItem = "record"

// watchWait is how long one blocking query of Watch waits for a change
// before Nomad answers with the same state.
const watchWait = time.Minute

// VariableStore keeps deployment records in Nomad Variables, one Variable
// per deployment (<Prefix>/<deploy id>, item "record"): durable and
// replicated by Nomad's servers (Raft), encrypted at rest, and needing no
// other infrastructure than the Nomad thaw already runs on. It implements
// deploy.SharedBackend, so that every thaw server replica can write: each
// write is checked against the record's ModifyIndex (Nomad's check-and-set),
// model names are reserved by create-only Variables under NamesPrefix, and
// Watch is a blocking query on Prefix. Records hold HF tokens, so thaw's ACL
// token needs read/write on Prefix and no job's policy should grant it.
type VariableStore struct {
	Client      *api.Client
	Prefix      string // default DefaultStorePrefix
	NamesPrefix string // default DefaultNamesPrefix
	Namespace   string // default: the client's
	// Now is the clock that ages name reservations; nil means time.Now.
	Now func() time.Time
}

var _ deploy.SharedBackend = VariableStore{}

func (v VariableStore) path(id string) string { return v.prefix() + "/" + id }

func (v VariableStore) prefix() string {
	if v.Prefix == "" {
		return DefaultStorePrefix
	}
	return strings.TrimSuffix(v.Prefix, "/")
}

func (v VariableStore) q() *api.QueryOptions { return &api.QueryOptions{Namespace: v.Namespace} }

func (v VariableStore) w() *api.WriteOptions { return &api.WriteOptions{Namespace: v.Namespace} }

func (v VariableStore) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

// Load reads every record under Prefix.
func (v VariableStore) Load() ([]deploy.Record, error) {
	versions, _, err := v.list(v.q())
	if err != nil {
		return nil, err
	}
	out := make([]deploy.Record, 0, len(versions))
	for id := range versions {
		r, err := v.Read(id)
		if errors.Is(err, deploy.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// list returns the ModifyIndex of each record by deployment ID, and the
// index of that state.
func (v VariableStore) list(q *api.QueryOptions) (map[string]uint64, uint64, error) {
	metas, qm, err := v.Client.Variables().PrefixList(v.prefix()+"/", q)
	if err != nil && !isNotFound(err) {
		return nil, 0, fmt.Errorf("list deployments in nomad variables: %w", denied(err, needVariable("list", v.prefix()+"/*")))
	}
	out := make(map[string]uint64, len(metas))
	for _, m := range metas {
		id := strings.TrimPrefix(m.Path, v.prefix()+"/")
		if id == "" || strings.Contains(id, "/") {
			continue // not a record this store wrote
		}
		out[id] = m.ModifyIndex
	}
	var index uint64
	if qm != nil {
		index = qm.LastIndex
	}
	return out, index, nil
}

// Read reads id's record.
func (v VariableStore) Read(id string) (deploy.Record, error) {
	vr, _, err := v.Client.Variables().Read(v.path(id), v.q())
	if errors.Is(err, api.ErrVariablePathNotFound) || (err != nil && isNotFound(err)) {
		return deploy.Record{}, fmt.Errorf("read %s: %w", v.path(id), deploy.ErrNotFound)
	}
	if err != nil {
		return deploy.Record{}, fmt.Errorf("read %s: %w", v.path(id), denied(err, needVariable("read", v.prefix()+"/*")))
	}
	var d deploy.Deployment
	if err := json.Unmarshal([]byte(vr.Items[recordItem]), &d); err != nil {
		return deploy.Record{}, fmt.Errorf("parse %s: %w", vr.Path, err)
	}
	return deploy.Record{Deployment: d, Version: vr.ModifyIndex}, nil
}

// Create reserves d's model name, then writes d's record, which must not
// exist. When the record cannot be written the name is released again.
func (v VariableStore) Create(d deploy.Deployment) (uint64, error) {
	if err := v.reserveName(d); err != nil {
		return 0, err
	}
	ver, err := v.write(d, 0)
	if err != nil {
		v.releaseName(d)
		return 0, err
	}
	return ver, nil
}

// Update writes d's record if its ModifyIndex is still version.
func (v VariableStore) Update(d deploy.Deployment, version uint64) (uint64, error) {
	return v.write(d, version)
}

// write writes d's record with Nomad's check-and-set at version (0: the
// record must not exist) and returns its new ModifyIndex.
func (v VariableStore) write(d deploy.Deployment, version uint64) (uint64, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return 0, fmt.Errorf("encode deployment: %w", err)
	}
	vr := &api.Variable{Namespace: v.Namespace, Path: v.path(d.ID), Items: api.VariableItems{recordItem: string(b)}, ModifyIndex: version}
	out, _, err := v.Client.Variables().CheckedUpdate(vr, v.w())
	if _, ok := errors.AsType[api.ErrCASConflict](err); ok {
		return 0, fmt.Errorf("save deployment %s in nomad variables: %w (%v)", d.ID, deploy.ErrConflict, err)
	}
	if err != nil {
		return 0, fmt.Errorf("save deployment %s in nomad variables: %w", d.ID, denied(err, needVariable("write", v.prefix()+"/*")))
	}
	return out.ModifyIndex, nil
}

// Delete removes d's record if its ModifyIndex is still version, then
// releases its model name.
func (v VariableStore) Delete(d deploy.Deployment, version uint64) error {
	_, err := v.Client.Variables().CheckedDelete(v.path(d.ID), version, v.w())
	if _, ok := errors.AsType[api.ErrCASConflict](err); ok {
		return fmt.Errorf("delete deployment %s from nomad variables: %w (%v)", d.ID, deploy.ErrConflict, err)
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete deployment %s from nomad variables: %w", d.ID, denied(err, needVariable("destroy", v.prefix()+"/*")))
	}
	v.releaseName(d)
	return nil
}

// Watch is a blocking query on the records: it returns when a Variable in
// Nomad changes after index (any Variable: Nomad keeps one index for all),
// or after about a minute, or when ctx ends.
func (v VariableStore) Watch(ctx context.Context, index uint64) (map[string]uint64, uint64, error) {
	q := (&api.QueryOptions{Namespace: v.Namespace, WaitIndex: index, WaitTime: watchWait}).WithContext(ctx)
	return v.list(q)
}
