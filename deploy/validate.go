package deploy

import (
	"fmt"
	"regexp"
	"strings"
)

// Limits and defaults of the deploy API, after DeepInfra's.
const (
	DefaultNumGPUs      = 1
	DefaultMaxBatchSize = 96
	MaxNumGPUs          = 8
	MaxMaxBatchSize     = 256
	// MaxInstances bounds settings.max_instances: a typo must not ask for
	// thousands of GPUs.
	MaxInstances = 64
)

// GPUTypes are the GPU types a deployment may ask for (DeepInfra's list).
var GPUTypes = []string{"A100-80GB", "H100-80GB", "L4-24GB", "L40S-48GB", "H200-141GB", "B200-180GB"}

var modelNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var hfRepoRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// FieldError is a validation failure naming the offending field (the
// OpenAI error's "param").
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Normalize validates a create request and returns the deployment it
// describes (without ID, owner or timestamps). It is pure.
func Normalize(req CreateRequest) (*Deployment, error) {
	if req.ModelName == "" {
		return nil, fieldErr("model_name", "model_name is required")
	}
	if !modelNameRE.MatchString(req.ModelName) {
		return nil, fieldErr("model_name", "model_name %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", req.ModelName)
	}
	if req.GPU == "" {
		return nil, fieldErr("gpu", "gpu is required, one of %s", strings.Join(GPUTypes, ", "))
	}
	if !validGPU(req.GPU) {
		return nil, fieldErr("gpu", "unknown gpu %q, want one of %s", req.GPU, strings.Join(GPUTypes, ", "))
	}
	d := &Deployment{ModelName: req.ModelName}
	d.Config.GPU = req.GPU
	d.Config.NumGPUs = DefaultNumGPUs
	if req.NumGPUs != nil {
		d.Config.NumGPUs = *req.NumGPUs
	}
	if n := d.Config.NumGPUs; n < 1 || n > MaxNumGPUs {
		return nil, fieldErr("num_gpus", "num_gpus must be between 1 and %d, got %d", MaxNumGPUs, n)
	}
	d.Config.MaxBatchSize = DefaultMaxBatchSize
	if req.MaxBatchSize != nil {
		d.Config.MaxBatchSize = *req.MaxBatchSize
	}
	if n := d.Config.MaxBatchSize; n < 1 || n > MaxMaxBatchSize {
		return nil, fieldErr("max_batch_size", "max_batch_size must be between 1 and %d, got %d", MaxMaxBatchSize, n)
	}
	if req.HF == nil || req.HF.Repo == "" {
		return nil, fieldErr("hf.repo", "hf.repo is required (the Hugging Face repository of the weights)")
	}
	if !hfRepoRE.MatchString(req.HF.Repo) || len(req.HF.Repo) > 200 {
		return nil, fieldErr("hf.repo", "hf.repo %q is not a Hugging Face repository name (owner/name)", req.HF.Repo)
	}
	if len(req.HF.Revision) > 200 || strings.ContainsAny(req.HF.Revision, " \t\n") {
		return nil, fieldErr("hf.revision", "hf.revision is not a valid git revision")
	}
	d.Config.Weights = Weights{Repo: req.HF.Repo, Revision: req.HF.Revision}
	d.HFToken = req.HF.Token
	d.Settings = Settings{MinInstances: 0, MaxInstances: 1}
	if req.Settings != nil {
		d.Settings = *req.Settings
	}
	if err := ValidateSettings(d.Settings); err != nil {
		return nil, err
	}
	for _, a := range req.ExtraArgs {
		if strings.ContainsAny(a, "\n\x00") {
			return nil, fieldErr("extra_args", "extra_args must not contain newlines or NUL")
		}
	}
	d.Config.ExtraArgs = req.ExtraArgs
	return d, nil
}

// ValidateSettings checks min/max instances.
func ValidateSettings(s Settings) error {
	if s.MinInstances < 0 {
		return fieldErr("settings.min_instances", "min_instances must be >= 0, got %d", s.MinInstances)
	}
	if s.MaxInstances < 1 || s.MaxInstances > MaxInstances {
		return fieldErr("settings.max_instances", "max_instances must be between 1 and %d, got %d", MaxInstances, s.MaxInstances)
	}
	if s.MinInstances > s.MaxInstances {
		return fieldErr("settings.min_instances", "min_instances (%d) must not exceed max_instances (%d)", s.MinInstances, s.MaxInstances)
	}
	return nil
}

// CheckQuota reports whether a deployment can ever fit a user's GPU quota:
// one instance must fit, and the user's min_instances x num_gpus summed over
// all their deployments (others, plus d) must fit. quota <= 0 disables it.
func CheckQuota(quota int, d *Deployment, others []*Deployment) error {
	if quota <= 0 {
		return nil
	}
	if d.Config.NumGPUs > quota {
		return fieldErr("num_gpus", "num_gpus %d exceeds your GPU quota of %d", d.Config.NumGPUs, quota)
	}
	sum := d.Settings.MinInstances * d.Config.NumGPUs
	for _, o := range others {
		if o.ID != d.ID {
			sum += o.Settings.MinInstances * o.Config.NumGPUs
		}
	}
	if sum > quota {
		return fieldErr("settings.min_instances", "min_instances x num_gpus over your deployments would hold %d GPUs, over your GPU quota of %d", sum, quota)
	}
	return nil
}

func validGPU(g string) bool {
	for _, t := range GPUTypes {
		if t == g {
			return true
		}
	}
	return false
}
