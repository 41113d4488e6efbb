package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/thawhq/thaw/httperr"
)

func intp(n int) *int { return &n }

// validRequest is a complete, valid create request; tests change one field.
func validRequest() CreateRequest {
	return CreateRequest{
		ModelName:    "test-model",
		GPU:          "A100-80GB",
		NumGPUs:      intp(2),
		MaxBatchSize: intp(8),
		HF:           &HF{Repo: "meta-llama/Llama-2-7b-chat-hf", Revision: "main", Token: "hf_secret"},
		Settings:     &Settings{MinInstances: 1, MaxInstances: 3},
		ExtraArgs:    ExtraArgs{"--dtype", "half"},
	}
}

func TestNormalizeValid(t *testing.T) {
	tests := []struct {
		name string
		req  func() CreateRequest
		want Deployment
	}{
		{
			name: "every field given",
			req:  validRequest,
			want: Deployment{
				ModelName: "test-model",
				Config: Config{GPU: "A100-80GB", NumGPUs: 2, MaxBatchSize: 8,
					Weights: Weights{Repo: "meta-llama/Llama-2-7b-chat-hf", Revision: "main"}, ExtraArgs: ExtraArgs{"--dtype", "half"}},
				Settings: Settings{MinInstances: 1, MaxInstances: 3},
				HFToken:  "hf_secret",
			},
		},
		{
			name: "defaults",
			req: func() CreateRequest {
				return CreateRequest{ModelName: "m", GPU: "H100-80GB", HF: &HF{Repo: "gpt2"}}
			},
			want: Deployment{
				ModelName: "m",
				Config:    Config{GPU: "H100-80GB", NumGPUs: DefaultNumGPUs, MaxBatchSize: DefaultMaxBatchSize, Weights: Weights{Repo: "gpt2"}},
				Settings:  Settings{MinInstances: 0, MaxInstances: 1},
			},
		},
		{
			name: "limits inclusive",
			req: func() CreateRequest {
				r := validRequest()
				r.NumGPUs, r.MaxBatchSize = intp(MaxNumGPUs), intp(MaxMaxBatchSize)
				r.Settings = &Settings{MinInstances: MaxInstances, MaxInstances: MaxInstances}
				r.ExtraArgs = nil
				r.HF = &HF{Repo: "org/model"}
				return r
			},
			want: Deployment{
				ModelName: "test-model",
				Config:    Config{GPU: "A100-80GB", NumGPUs: 8, MaxBatchSize: 256, Weights: Weights{Repo: "org/model"}},
				Settings:  Settings{MinInstances: 64, MaxInstances: 64},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.req())
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("deployment (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNormalizeInvalid(t *testing.T) {
	tests := []struct {
		name      string
		change    func(*CreateRequest)
		wantField string
	}{
		{"model_name missing", func(r *CreateRequest) { r.ModelName = "" }, "model_name"},
		{"model_name with slash", func(r *CreateRequest) { r.ModelName = "a/b" }, "model_name"},
		{"model_name starting with dash", func(r *CreateRequest) { r.ModelName = "-m" }, "model_name"},
		{"model_name too long", func(r *CreateRequest) { r.ModelName = strings.Repeat("a", 65) }, "model_name"},
		{"gpu missing", func(r *CreateRequest) { r.GPU = "" }, "gpu"},
		{"gpu unknown", func(r *CreateRequest) { r.GPU = "RTX-4090" }, "gpu"},
		{"num_gpus 0", func(r *CreateRequest) { r.NumGPUs = intp(0) }, "num_gpus"},
		{"num_gpus 9", func(r *CreateRequest) { r.NumGPUs = intp(9) }, "num_gpus"},
		{"num_gpus negative", func(r *CreateRequest) { r.NumGPUs = intp(-1) }, "num_gpus"},
		{"max_batch_size 0", func(r *CreateRequest) { r.MaxBatchSize = intp(0) }, "max_batch_size"},
		{"max_batch_size 257", func(r *CreateRequest) { r.MaxBatchSize = intp(257) }, "max_batch_size"},
		{"hf missing", func(r *CreateRequest) { r.HF = nil }, "hf.repo"},
		{"hf.repo empty", func(r *CreateRequest) { r.HF = &HF{} }, "hf.repo"},
		{"hf.repo with spaces", func(r *CreateRequest) { r.HF = &HF{Repo: "meta llama/x"} }, "hf.repo"},
		{"hf.repo with two slashes", func(r *CreateRequest) { r.HF = &HF{Repo: "a/b/c"} }, "hf.repo"},
		{"hf.repo a URL", func(r *CreateRequest) { r.HF = &HF{Repo: "https://huggingface.co/gpt2"} }, "hf.repo"},
		{"hf.repo too long", func(r *CreateRequest) { r.HF = &HF{Repo: "a/" + strings.Repeat("b", 200)} }, "hf.repo"},
		{"hf.revision with space", func(r *CreateRequest) { r.HF.Revision = "main branch" }, "hf.revision"},
		{"hf.revision interpolated by Nomad", func(r *CreateRequest) { r.HF.Revision = "${NOMAD_TOKEN}" }, "hf.revision"},
		{"hf.revision climbing", func(r *CreateRequest) { r.HF.Revision = "../main" }, "hf.revision"},
		{"hf.repo a flag", func(r *CreateRequest) { r.HF = &HF{Repo: "--trust-remote-code"} }, "hf.repo"},
		{"hf.token with a newline", func(r *CreateRequest) { r.HF.Token = "hf_x\nLD_PRELOAD=/x.so" }, "hf.token"},
		{"hf.token with a space", func(r *CreateRequest) { r.HF.Token = "hf_x y" }, "hf.token"},
		{"hf.token too long", func(r *CreateRequest) { r.HF.Token = strings.Repeat("x", 257) }, "hf.token"},
		{"extra_args interpolated by Nomad", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"--x=${attr.unique.hostname}"} }, "extra_args"},
		{"min > max", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 3, MaxInstances: 2} }, "settings.min_instances"},
		{"negative min", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: -1, MaxInstances: 2} }, "settings.min_instances"},
		{"max 0", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 0, MaxInstances: 0} }, "settings.max_instances"},
		{"max over 64", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 0, MaxInstances: 65} }, "settings.max_instances"},
		{"extra_args newline", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"--a\n--b"} }, "extra_args"},
		{"extra_args NUL", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"x\x00"} }, "extra_args"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe := normalizeRefused(t, tt.change)
			if fe.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (message %q)", fe.Field, tt.wantField, fe.Message)
			}
			if !strings.Contains(fe.Message, strings.TrimPrefix(tt.wantField, "settings.")) {
				t.Errorf("message %q does not name %s", fe.Message, tt.wantField)
			}
		})
	}
}

// normalizeRefused normalizes validRequest() after change and returns the
// *FieldError Normalize must refuse it with.
func normalizeRefused(t *testing.T, change func(*CreateRequest)) *FieldError {
	t.Helper()
	req := validRequest()
	change(&req)
	d, err := Normalize(req)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Normalize = %+v, %v; want a *FieldError", d, err)
	}
	return fe
}

// TestNormalizeKinds checks which refusals are malformed names
// (ErrMalformed, 400 in the API) rather than values out of range (422).
func TestNormalizeKinds(t *testing.T) {
	tests := []struct {
		name   string
		change func(*CreateRequest)
		want   error
	}{
		{"model_name grammar", func(r *CreateRequest) { r.ModelName = "a b" }, ErrMalformed},
		{"hf.repo grammar", func(r *CreateRequest) { r.HF.Repo = "a/b/c" }, ErrMalformed},
		{"hf.revision grammar", func(r *CreateRequest) { r.HF.Revision = "$x" }, ErrMalformed},
		{"extra_args NUL", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"\x00"} }, ErrMalformed},
		{"hf.token with a newline", func(r *CreateRequest) { r.HF.Token = "hf_x\nLD_PRELOAD=/x.so" }, ErrMalformed},
		{"model_name missing", func(r *CreateRequest) { r.ModelName = "" }, nil},
		{"num_gpus out of range", func(r *CreateRequest) { r.NumGPUs = intp(9) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe := normalizeRefused(t, tt.change)
			if fe.Err != tt.want {
				t.Errorf("kind = %v, want %v", fe.Err, tt.want)
			}
		})
	}
}

func TestCheckHFRepo(t *testing.T) {
	rule := `; a Hugging Face repository is "owner/name" (or a bare "name"): 1-96 letters, digits, '.', '_' or '-' in each part, ` +
		`starting and ending with a letter, digit or '_', without "--" or "..", not ending in ".git"`
	tests := []struct {
		repo string
		want string // message; "" = valid
	}{
		{"meta-llama/Llama-2-7b-chat-hf", ""},
		{"gpt2", ""},
		{"Qwen/Qwen2.5-0.5B-Instruct", ""},
		{"_org/_m_", ""},
		{"a/b", ""},
		{strings.Repeat("o", 96) + "/" + strings.Repeat("n", 96), ""},
		{"", `hf.repo "" has an empty part` + rule},
		{"a/", `hf.repo "a/" has an empty part` + rule},
		{"/b", `hf.repo "/b" has an empty part` + rule},
		{"a/b/c", `hf.repo "a/b/c" has more than one '/'` + rule},
		{"https://huggingface.co/gpt2", `hf.repo "https://huggingface.co/gpt2" has more than one '/'` + rule},
		{"a/" + strings.Repeat("n", 97), `hf.repo "a/` + strings.Repeat("n", 78) + `..." has a part longer than 96 characters` + rule},
		{strings.Repeat("o", 97) + "/b", `hf.repo "` + strings.Repeat("o", 80) + `..." has a part longer than 96 characters` + rule},
		{"meta llama/x", `hf.repo "meta llama/x" is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{"-org/m", `hf.repo "-org/m" is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{"org/m.", `hf.repo "org/m." is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{".org/m", `hf.repo ".org/m" is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{"org/${x}", `hf.repo "org/${x}" is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{"org/modèle", `hf.repo "org/modèle" is not made of letters, digits, '.', '_' and '-' with a letter, digit or '_' at each end` + rule},
		{"org/a..b", `hf.repo "org/a..b" contains "--" or ".."` + rule},
		{"org/a--b", `hf.repo "org/a--b" contains "--" or ".."` + rule},
		{"org/m.git", `hf.repo "org/m.git" ends in ".git"` + rule},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			checkMalformed(t, fmt.Sprintf("CheckHFRepo(%q)", tt.repo), CheckHFRepo(tt.repo), "hf.repo", tt.want)
		})
	}
}

// checkMalformed fails unless err, what call returned, is nil where
// message is "", and otherwise a *FieldError of field, ErrMalformed and
// message.
func checkMalformed(t *testing.T, call string, err error, field, message string) {
	t.Helper()
	if message == "" {
		if err != nil {
			t.Fatalf("%s = %v, want nil", call, err)
		}
		return
	}
	var got *FieldError
	if !errors.As(err, &got) {
		t.Fatalf("%s = %v, want a *FieldError", call, err)
	}
	want := FieldError{Field: field, Err: ErrMalformed, Message: message}
	if diff := cmp.Diff(want, *got, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("%s (-want +got):\n%s", call, diff)
	}
}

func TestCheckHFRevision(t *testing.T) {
	rule := "; a revision is a branch, tag or commit of the repository (e.g. main, v1.0, refs/pr/1): " +
		"up to 200 letters, digits, '.', '_', '-', '+' and '/', not starting with '-', '.' or '/', " +
		`without ".." or "//", no part starting with '.' or ending in ".lock", not ending with '/' or '.'`
	tests := []struct {
		rev  string
		want string // the reason; "" = valid
	}{
		{"main", ""},
		{"v1.0.2", ""},
		{"refs/pr/12", ""},
		{"0e9e39f249a16976918f6564b8830bc894c89659", ""},
		{"gptq-4bit-32g-actorder_True", ""},
		{"v1.0+cu118", ""},
		{strings.Repeat("a", 200), ""},
		{"", `is empty or longer than 200 characters`},
		{strings.Repeat("a", 201), `is empty or longer than 200 characters`},
		{"${NOMAD_TOKEN}", `contains '$'`},
		{"main\"", `contains '"'`},
		{"it's", `contains '\''`},
		{`a\b`, `contains '\\'`},
		{"main branch", `contains ' '`},
		{"main\n", `contains '\n'`},
		{"tab\tx", `contains '\t'`},
		{"x\x00", `contains '\x00'`},
		{"ma~in", `contains '~'`},
		{"a:b", `contains ':'`},
		{"é", `contains 'é'`},
		{"-rf", `starts with '-', '/' or '.'`},
		{"/main", `starts with '-', '/' or '.'`},
		{".hidden", `starts with '-', '/' or '.'`},
		{"main/", `ends with '/' or '.'`},
		{"v1.", `ends with '/' or '.'`},
		{"a..b", `contains ".." or "//"`},
		{"refs//pr", `contains ".." or "//"`},
		{"refs/.x", `has a part starting with '.' or ending in ".lock"`},
		{"main.lock", `has a part starting with '.' or ending in ".lock"`},
		{"a.lock/b", `has a part starting with '.' or ending in ".lock"`},
	}
	for _, tt := range tests {
		t.Run(tt.rev, func(t *testing.T) {
			msg := ""
			if tt.want != "" {
				msg = fmt.Sprintf("hf.revision %q %s%s", httperr.Clip(tt.rev), tt.want, rule)
			}
			checkMalformed(t, fmt.Sprintf("CheckHFRevision(%q)", tt.rev), CheckHFRevision(tt.rev), "hf.revision", msg)
		})
	}
}

func TestExtraArgsJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ExtraArgs
		wantErr bool
	}{
		{name: "string split on white space", in: `{"extra_args":"--dtype half\t--seed  1"}`, want: ExtraArgs{"--dtype", "half", "--seed", "1"}},
		{name: "array", in: `{"extra_args":["--dtype","half with space"]}`, want: ExtraArgs{"--dtype", "half with space"}},
		{name: "empty string", in: `{"extra_args":""}`, want: ExtraArgs{}},
		{name: "absent", in: `{}`},
		{name: "number", in: `{"extra_args":5}`, wantErr: true},
		{name: "array of numbers", in: `{"extra_args":[1,2]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req CreateRequest
			err := json.Unmarshal([]byte(tt.in), &req)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "extra_args") {
					t.Errorf("Unmarshal error = %v, want one naming extra_args", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if diff := cmp.Diff(tt.want, req.ExtraArgs); diff != "" {
				t.Errorf("extra_args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckQuota(t *testing.T) {
	dep := func(id string, numGPUs, min int) *Deployment {
		return &Deployment{ID: id, Config: Config{NumGPUs: numGPUs}, Settings: Settings{MinInstances: min, MaxInstances: 8}}
	}
	tests := []struct {
		name      string
		quota     int
		d         *Deployment
		others    []*Deployment
		wantField string // "" = fits
	}{
		{name: "quota 0 is off", quota: 0, d: dep("", 8, 8)},
		{name: "negative quota is off", quota: -1, d: dep("", 8, 8)},
		{name: "num_gpus equal to quota", quota: 4, d: dep("", 4, 1)},
		{name: "num_gpus over quota even at min 0", quota: 4, d: dep("", 5, 0), wantField: "num_gpus"},
		{name: "min x gpus fits", quota: 4, d: dep("", 2, 2)},
		{name: "min x gpus over", quota: 4, d: dep("", 2, 3), wantField: "settings.min_instances"},
		{name: "sum over deployments fits", quota: 4, d: dep("", 1, 2), others: []*Deployment{dep("a", 1, 1), dep("b", 2, 0)}},
		{name: "sum over deployments over", quota: 4, d: dep("", 1, 2), others: []*Deployment{dep("a", 1, 1), dep("b", 2, 1)}, wantField: "settings.min_instances"},
		{name: "update does not count itself twice", quota: 4, d: dep("a", 2, 2), others: []*Deployment{dep("a", 2, 2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckQuota(tt.quota, tt.d, tt.others)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("CheckQuota = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("CheckQuota = %v, want a *FieldError", err)
			}
			if fe.Field != tt.wantField || !strings.Contains(fe.Message, "quota") {
				t.Errorf("error = %v, want field %s and a message about the quota", fe, tt.wantField)
			}
		})
	}
}
