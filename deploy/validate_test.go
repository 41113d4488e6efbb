package deploy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
		{"min > max", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 3, MaxInstances: 2} }, "settings.min_instances"},
		{"negative min", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: -1, MaxInstances: 2} }, "settings.min_instances"},
		{"max 0", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 0, MaxInstances: 0} }, "settings.max_instances"},
		{"max over 64", func(r *CreateRequest) { r.Settings = &Settings{MinInstances: 0, MaxInstances: 65} }, "settings.max_instances"},
		{"extra_args newline", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"--a\n--b"} }, "extra_args"},
		{"extra_args NUL", func(r *CreateRequest) { r.ExtraArgs = ExtraArgs{"x\x00"} }, "extra_args"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.change(&req)
			d, err := Normalize(req)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Normalize = %+v, %v; want a *FieldError", d, err)
			}
			if fe.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (message %q)", fe.Field, tt.wantField, fe.Message)
			}
			if !strings.Contains(fe.Message, strings.TrimPrefix(tt.wantField, "settings.")) {
				t.Errorf("message %q does not name %s", fe.Message, tt.wantField)
			}
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
