package deploy

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/thawhq/thaw/httperr"
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

// Normalize validates a create request and returns the deployment it
// describes (without ID, owner or timestamps). It is pure.
func Normalize(req CreateRequest) (*Deployment, error) {
	if req.ModelName == "" {
		return nil, fieldErr("model_name", "model_name is required")
	}
	if !modelNameRE.MatchString(req.ModelName) {
		return nil, kindErr(ErrMalformed, "model_name", "model_name %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", httperr.Clip(req.ModelName))
	}
	if req.GPU == "" {
		return nil, fieldErr("gpu", "gpu is required, one of %s", strings.Join(GPUTypes, ", "))
	}
	if !validGPU(req.GPU) {
		return nil, fieldErr("gpu", "unknown gpu %q, want one of %s", httperr.Clip(req.GPU), strings.Join(GPUTypes, ", "))
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
	if err := CheckHFRepo(req.HF.Repo); err != nil {
		return nil, err
	}
	if req.HF.Revision != "" {
		if err := CheckHFRevision(req.HF.Revision); err != nil {
			return nil, err
		}
	}
	if err := checkHFToken(req.HF.Token); err != nil {
		return nil, err
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
			return nil, kindErr(ErrMalformed, "extra_args", "extra_args must not contain newlines or NUL")
		}
		if strings.Contains(a, "${") {
			// Nomad replaces ${...} in a task's arguments with its
			// environment and node attributes, and has no escape for it.
			return nil, kindErr(ErrMalformed, "extra_args", "extra_args must not contain \"${\" (got %q)", httperr.Clip(a))
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
		return kindErr(ErrOverQuota, "num_gpus", "num_gpus %d exceeds your GPU quota of %d", d.Config.NumGPUs, quota)
	}
	sum := d.Settings.MinInstances * d.Config.NumGPUs
	for _, o := range others {
		if o.ID != d.ID {
			sum += o.Settings.MinInstances * o.Config.NumGPUs
		}
	}
	if sum > quota {
		return kindErr(ErrOverQuota, "settings.min_instances", "min_instances x num_gpus over your deployments would hold %d GPUs, over your GPU quota of %d", sum, quota)
	}
	return nil
}

// malformed returns the error of a field whose value breaks its grammar:
// the field, the value, why it is refused and rule, what is allowed.
func malformed(field, value, rule string) func(why string) error {
	return func(why string) error {
		return kindErr(ErrMalformed, field, "%s %q %s; %s", field, httperr.Clip(value), why, rule)
	}
}

// Hugging Face's grammar of repository names (huggingface_hub's
// validate_repo_id): "name" or "owner/name", each part 1-96 of
// [A-Za-z0-9._-] starting and ending with a letter, digit or '_', without
// "--" or "..", the whole not ending in ".git".
const maxHFRepoPart = 96

var hfRepoPartRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$`)

// hfRepoRule is what CheckHFRepo's errors say is allowed.
const hfRepoRule = "a Hugging Face repository is \"owner/name\" (or a bare \"name\"): " +
	"1-96 letters, digits, '.', '_' or '-' in each part, starting and ending with a letter, digit or '_', " +
	"without \"--\" or \"..\", not ending in \".git\""

// CheckHFRepo reports whether repo follows Hugging Face's grammar of
// repository names, with a *FieldError (field "hf.repo", ErrMalformed)
// saying what is allowed. Only names that pass reach a job's arguments.
func CheckHFRepo(repo string) error {
	bad := malformed("hf.repo", repo, hfRepoRule)
	parts := strings.Split(repo, "/")
	if len(parts) > 2 {
		return bad("has more than one '/'")
	}
	for _, p := range parts {
		switch {
		case p == "":
			return bad("has an empty part")
		case len(p) > maxHFRepoPart:
			return bad("has a part longer than 96 characters")
		case !hfRepoPartRE.MatchString(p):
			return bad("is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end")
		}
	}
	switch {
	case strings.Contains(repo, "--"), strings.Contains(repo, ".."):
		return bad("contains \"--\" or \"..\"")
	case strings.HasSuffix(repo, ".git"):
		return bad("ends in \".git\"")
	}
	return nil
}

// maxHFRevision bounds hf.revision; a commit hash is 40 characters.
const maxHFRevision = 200

// hfRevisionRule is what CheckHFRevision's errors say is allowed.
const hfRevisionRule = "a revision is a branch, tag or commit of the repository (e.g. main, v1.0, refs/pr/1): " +
	"up to 200 letters, digits, '.', '_', '-', '+' and '/', not starting with '-', '.' or '/', " +
	"without \"..\" or \"//\", no part starting with '.' or ending in \".lock\", not ending with '/' or '.'"

// CheckHFRevision reports whether rev is a safe git branch, tag or commit
// name, with a *FieldError (field "hf.revision", ErrMalformed) saying what
// is allowed. The rules are git's (check-ref-format) narrowed to
// characters that mean nothing to Nomad, a shell or a command line: no
// '$' (Nomad interpolates "${...}" in job arguments), quotes, backslash,
// white space or control characters, and no leading '-' (a flag). The
// empty revision (the default branch) is the caller's to allow.
func CheckHFRevision(rev string) error {
	bad := malformed("hf.revision", rev, hfRevisionRule)
	if rev == "" || len(rev) > maxHFRevision {
		return bad("is empty or longer than 200 characters")
	}
	for _, c := range rev {
		if !revisionChar(c) {
			return bad(fmt.Sprintf("contains %q", c))
		}
	}
	switch {
	case strings.HasPrefix(rev, "-"), strings.HasPrefix(rev, "/"), strings.HasPrefix(rev, "."):
		return bad("starts with '-', '/' or '.'")
	case strings.HasSuffix(rev, "/"), strings.HasSuffix(rev, "."):
		return bad("ends with '/' or '.'")
	case strings.Contains(rev, ".."), strings.Contains(rev, "//"):
		return bad("contains \"..\" or \"//\"")
	}
	for _, part := range strings.Split(rev, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad("has a part starting with '.' or ending in \".lock\"")
		}
	}
	return nil
}

// maxHFToken bounds hf.token; Hugging Face's are about 40 characters.
const maxHFToken = 256

// checkHFToken refuses a token that could not be one: the runtime writes it
// into an environment file (HF_TOKEN=...), where a newline would add
// variables. Its errors never repeat the token.
func checkHFToken(tok string) error {
	if len(tok) > maxHFToken {
		return kindErr(ErrMalformed, "hf.token", "hf.token is longer than %d characters", maxHFToken)
	}
	for _, c := range tok {
		if c <= ' ' || c >= 0x7f {
			return kindErr(ErrMalformed, "hf.token", "hf.token must be printable ASCII without spaces (a Hugging Face access token, hf_...)")
		}
	}
	return nil
}

func revisionChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("._-+/", c)
}

func validGPU(g string) bool {
	for _, t := range GPUTypes {
		if t == g {
			return true
		}
	}
	return false
}
