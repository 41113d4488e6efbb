package deploy

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Status is a deployment's lifecycle state, with DeepInfra's values.
type Status string

// Status values. A deployment at zero instances that can be woken by a
// request is StatusRunning: it serves, it just has no GPU attached yet.
const (
	StatusInitializing Status = "initializing"
	StatusDeploying    Status = "deploying"
	StatusRunning      Status = "running"
	StatusStopped      Status = "stopped"
	StatusFailed       Status = "failed"
	StatusDeleted      Status = "deleted"
)

// HF names the model weights on Hugging Face. Token is write-only: it is
// accepted on create and never returned or logged.
type HF struct {
	Repo     string `json:"repo"`
	Revision string `json:"revision,omitempty"`
	Token    string `json:"token,omitempty"`
}

// Settings are the parts of a deployment that PUT /deploy/{id} may change.
type Settings struct {
	MinInstances int `json:"min_instances"`
	MaxInstances int `json:"max_instances"`
}

// ExtraArgs are extra model-server flags. JSON accepts either a string
// ("--dtype half --seed 1") or an array of strings.
type ExtraArgs []string

// UnmarshalJSON accepts a string (split on white space) or a string array.
func (e *ExtraArgs) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*e = strings.Fields(s)
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return kindErr(ErrWrongType, "extra_args", "extra_args must be a string or an array of strings")
	}
	*e = a
	return nil
}

// CreateRequest is the body of POST /deploy/llm. Pointer fields tell "absent"
// from zero so that defaults apply only to absent fields.
type CreateRequest struct {
	ModelName    string    `json:"model_name"`
	GPU          string    `json:"gpu"`
	NumGPUs      *int      `json:"num_gpus"`
	MaxBatchSize *int      `json:"max_batch_size"`
	HF           *HF       `json:"hf"`
	Settings     *Settings `json:"settings"`
	ExtraArgs    ExtraArgs `json:"extra_args,omitempty"`
}

// UpdateRequest is the body of PUT /deploy/{id}: settings only.
type UpdateRequest struct {
	Settings *Settings `json:"settings"`
}

// Weights is the public view of HF (no token).
type Weights struct {
	Repo     string `json:"repo"`
	Revision string `json:"revision,omitempty"`
}

// Config is a deployment's fixed configuration.
type Config struct {
	GPU          string    `json:"gpu"`
	NumGPUs      int       `json:"num_gpus"`
	MaxBatchSize int       `json:"max_batch_size"`
	Weights      Weights   `json:"weights"`
	ExtraArgs    ExtraArgs `json:"extra_args,omitempty"`
}

// Instances is the honest count of a deployment's instances. Pending counts
// instances wanted but not yet serving (starting, or not placed); Reason says
// why, whenever fewer run than are desired.
type Instances struct {
	Running int    `json:"running"`
	Pending int    `json:"pending"`
	Desired int    `json:"desired"`
	Reason  string `json:"reason,omitempty"`
}

// Deployment is the stored record of one deployment.
type Deployment struct {
	ID        string    `json:"deploy_id"`
	Owner     string    `json:"owner"`
	ModelName string    `json:"model_name"`
	Config    Config    `json:"config"`
	Settings  Settings  `json:"settings"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// HFToken is stored so the runtime can fetch private weights; it never
	// leaves the process through the API (see View).
	HFToken string `json:"hf_token,omitempty"`
}

// FullName is the name clients call the model by: "<owner>/<model_name>".
func (d *Deployment) FullName() string { return d.Owner + "/" + d.ModelName }

// View is the deploy object the API returns (DeepInfra's fields, plus
// full_name and the desired/reason parts of instances).
type View struct {
	ID         string    `json:"deploy_id"`
	ModelName  string    `json:"model_name"`
	FullName   string    `json:"full_name"`
	Type       string    `json:"type"`
	Status     Status    `json:"status"`
	FailReason string    `json:"fail_reason"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Instances  Instances `json:"instances"`
	Config     Config    `json:"config"`
	Settings   Settings  `json:"settings"`
}

// Live is the run-time part of a deployment's view, reported by the fleet.
type Live struct {
	Status     Status
	FailReason string
	Instances  Instances
}

// NewView builds the API object from the record and its live state.
func NewView(d *Deployment, l Live) View {
	return View{
		ID:         d.ID,
		ModelName:  d.ModelName,
		FullName:   d.FullName(),
		Type:       "llm",
		Status:     l.Status,
		FailReason: l.FailReason,
		CreatedAt:  d.CreatedAt,
		UpdatedAt:  d.UpdatedAt,
		Instances:  l.Instances,
		Config:     d.Config,
		Settings:   d.Settings,
	}
}
