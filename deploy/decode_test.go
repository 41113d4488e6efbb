package deploy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// deepInfraCreate is DeepInfra's documented POST /deploy/llm body, as its
// curl example has it: a trailing comma inside settings.
const deepInfraCreate = `{
    "model_name": "test-model",
    "gpu": "A100-80GB",
    "num_gpus": 2,
    "max_batch_size": 64,
    "hf": {
        "repo": "meta-llama/Llama-2-7b-chat-hf"
    },
    "settings": {
        "min_instances": 0,
        "max_instances": 1,
    }
}`

// deepInfraUpdate is DeepInfra's documented PUT /deploy/{id} body.
const deepInfraUpdate = `{
    "settings": {
        "min_instances": 1,
        "max_instances": 1,
    }
}`

func TestDecodeCreate(t *testing.T) {
	checkDecode(t, DecodeCreate, []decodeCase[CreateRequest]{
		{"DeepInfra's example as pasted", deepInfraCreate, CreateRequest{
			ModelName: "test-model", GPU: "A100-80GB", NumGPUs: intp(2), MaxBatchSize: intp(64),
			HF: &HF{Repo: "meta-llama/Llama-2-7b-chat-hf"}, Settings: &Settings{MinInstances: 0, MaxInstances: 1},
		}},
		{"trailing commas everywhere", `{"model_name": "m", "hf": {"repo": "o/r", "token": "t",}, "extra_args": ["--a", "b",],}`, CreateRequest{
			ModelName: "m", HF: &HF{Repo: "o/r", Token: "t"}, ExtraArgs: ExtraArgs{"--a", "b"},
		}},
		{"a comma inside a string is kept", `{"model_name": "m", "extra_args": "--x a,}",}`, CreateRequest{
			ModelName: "m", ExtraArgs: ExtraArgs{"--x", "a,}"},
		}},
		{"null objects are absent", `{"model_name": "m", "hf": null, "settings": null}`, CreateRequest{ModelName: "m"}},
		{"escaped key", `{"model\u005fname": "m"}`, CreateRequest{ModelName: "m"}},
	})
}

func TestDecodeUpdate(t *testing.T) {
	checkDecode(t, DecodeUpdate, []decodeCase[UpdateRequest]{
		{"DeepInfra's example as pasted", deepInfraUpdate, UpdateRequest{Settings: &Settings{MinInstances: 1, MaxInstances: 1}}},
		{"create fields are ignored", `{"settings": {"max_instances": 2}, "gpu": "H100-80GB", "hf": {"anything": 1}, "num_gpus": "two"}`,
			UpdateRequest{Settings: &Settings{MaxInstances: 2}}},
		{"no settings", `{}`, UpdateRequest{}},
	})
}

// decodeCase is a body that decodes into want.
type decodeCase[T any] struct {
	name string
	body string
	want T
}

// checkDecode runs one subtest a case: decode must accept the body and
// return the case's want.
func checkDecode[T any](t *testing.T, decode func([]byte) (T, error), cases []decodeCase[T]) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		update bool
		body   string
		want   *FieldError
	}{
		{name: "empty", body: " \n", want: &FieldError{Err: ErrBadJSON,
			Message: "request body is empty: want a JSON object"}},
		{name: "cut short in an object", body: "{\n  \"model_name\": \"m\",", want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: unexpected end at line 2, column 21: the object that starts at line 1, column 1 is not closed: expected more fields or '}'"}},
		{name: "cut short in a nested object", body: `{"hf": {"repo": "o/r"`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: unexpected end at line 1, column 22: the object that starts at line 1, column 8 is not closed: expected more fields or '}'"}},
		{name: "cut short in an array", body: `{"extra_args": ["a"`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: unexpected end at line 1, column 20: the array that starts at line 1, column 16 is not closed: expected more values or ']'"}},
		{name: "cut short in a string", body: `{"model_name": "m`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: unexpected end at line 1, column 18: the string that starts at line 1, column 16 is not closed: expected '\"'"}},
		{name: "missing value", body: "{\n  \"model_name\": \"m\",\n  \"gpu\": ,\n}", want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 3, column 10: invalid character ',' looking for beginning of value"}},
		{name: "two commas", body: `{"model_name": "m",,}`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 20: invalid character ',' looking for beginning of object key string"}},
		{name: "leading comma", body: `{"extra_args": [,]}`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 17: invalid character ',' looking for beginning of value"}},
		{name: "comment", body: `{"model_name": "m" // mine` + "\n}", want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 20: invalid character '/' after object key:value pair"}},
		{name: "single quotes", body: `{'model_name': 'm'}`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 2: invalid character '\\'' looking for beginning of object key string"}},
		{name: "garbage after the object", body: `{"model_name": "m"} x`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 21: invalid character 'x' after top-level value"}},
		{name: "column counts characters", body: `{"model_name": "é" x}`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 20: invalid character 'x' after object key:value pair"}},
		{name: "invalid UTF-8", body: "{\"model_name\": \"m\xff\"}", want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid UTF-8: line 1, column 18 (byte 17)"}},
		{name: "an array", body: `[1, 2]`, want: &FieldError{Err: ErrBadJSON, Message: "request body must be a JSON object, got an array"}},
		{name: "null", body: `null`, want: &FieldError{Err: ErrBadJSON, Message: "request body must be a JSON object, got null"}},
		{name: "deep nesting", body: `{"extra_args": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, want: &FieldError{Err: ErrBadJSON,
			Message: "request body is not valid JSON: line 1, column 10015: invalid character '[' exceeded max depth"}},
		{name: "unknown field", body: `{"model_name": "m", "min_instances": 1}`, want: &FieldError{Field: "min_instances", Err: ErrUnknownField,
			Message: `unknown field "min_instances": the body takes model_name, gpu, num_gpus, max_batch_size, hf, settings, extra_args`}},
		{name: "unknown nested field", body: `{"settings": {"min_instance": 1,}}`, want: &FieldError{Field: "settings.min_instance", Err: ErrUnknownField,
			Message: `unknown field "settings.min_instance": settings takes min_instances, max_instances`}},
		{name: "field names are case-sensitive", body: `{"Model_Name": "m"}`, want: &FieldError{Field: "Model_Name", Err: ErrUnknownField,
			Message: `unknown field "Model_Name": the body takes model_name, gpu, num_gpus, max_batch_size, hf, settings, extra_args`}},
		{name: "unknown field on update", update: true, body: `{"settings": {"max_instances": 1}, "deploy_id": "d-1"}`, want: &FieldError{Field: "deploy_id", Err: ErrUnknownField,
			Message: `unknown field "deploy_id": the body takes settings (the other fields of a create body are accepted and ignored: they cannot change)`}},
		{name: "unknown nested field on update", update: true, body: `{"settings": {"max": 1}}`, want: &FieldError{Field: "settings.max", Err: ErrUnknownField,
			Message: `unknown field "settings.max": settings takes min_instances, max_instances`}},
		{name: "repeated field", body: `{"model_name": "a", "model_name": "b"}`, want: &FieldError{Field: "model_name", Err: ErrRepeatedField,
			Message: `field "model_name" is given more than once: give it once`}},
		{name: "repeated nested field", update: true, body: `{"settings": {"max_instances": 1, "max_instances": 9}}`, want: &FieldError{Field: "settings.max_instances", Err: ErrRepeatedField,
			Message: `field "settings.max_instances" is given more than once: give it once`}},
		{name: "repeated through an escape", body: `{"gpu": "a", "g\u0070u": "b"}`, want: &FieldError{Field: "gpu", Err: ErrRepeatedField,
			Message: `field "gpu" is given more than once: give it once`}},
		{name: "string for an integer", body: `{"num_gpus": "1"}`, want: &FieldError{Field: "num_gpus", Err: ErrWrongType,
			Message: "num_gpus must be an integer (64-bit), got string"}},
		{name: "fraction", update: true, body: `{"settings": {"max_instances": 1.5}}`, want: &FieldError{Field: "settings.max_instances", Err: ErrWrongType,
			Message: "settings.max_instances must be an integer (64-bit), got number 1.5"}},
		{name: "huge number", body: `{"max_batch_size": 1e400}`, want: &FieldError{Field: "max_batch_size", Err: ErrWrongType,
			Message: "max_batch_size must be an integer (64-bit), got number 1e400"}},
		{name: "huge integer", body: `{"num_gpus": 99999999999999999999}`, want: &FieldError{Field: "num_gpus", Err: ErrWrongType,
			Message: "num_gpus must be an integer (64-bit), got number 99999999999999999999"}},
		{name: "very long number is clipped", body: `{"num_gpus": ` + strings.Repeat("9", 1000) + `}`, want: &FieldError{Field: "num_gpus", Err: ErrWrongType,
			Message: "num_gpus must be an integer (64-bit), got number " + strings.Repeat("9", 73) + "..."}},
		{name: "number for a string", body: `{"hf": {"repo": 5}}`, want: &FieldError{Field: "hf.repo", Err: ErrWrongType,
			Message: "hf.repo must be a string, got number"}},
		{name: "string for an object", body: `{"hf": "meta-llama/x"}`, want: &FieldError{Field: "hf", Err: ErrWrongType,
			Message: "hf must be an object, got string"}},
		{name: "array for an object", update: true, body: `{"settings": [0, 1]}`, want: &FieldError{Field: "settings", Err: ErrWrongType,
			Message: "settings must be an object, got array"}},
		{name: "extra_args a number", body: `{"extra_args": 5}`, want: &FieldError{Field: "extra_args", Err: ErrWrongType,
			Message: "extra_args must be a string or an array of strings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.update {
				_, err = DecodeUpdate([]byte(tt.body))
			} else {
				_, err = DecodeCreate([]byte(tt.body))
			}
			var got *FieldError
			if !errors.As(err, &got) {
				t.Fatalf("error = %v, want a *FieldError", err)
			}
			if diff := cmp.Diff(*tt.want, *got, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDecode checks that any body decodes or fails with a *FieldError of
// a known kind and a message, never panics, and that what decodes is what
// encoding/json reads once the trailing commas are gone.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	kinds := []error{ErrBadJSON, ErrWrongType, ErrUnknownField, ErrRepeatedField}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, update := range []bool{false, true} {
			var got any
			var err error
			if update {
				got, err = DecodeUpdate(body)
			} else {
				got, err = DecodeCreate(body)
			}
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Message == "" {
					t.Fatalf("error %v (%T), want a *FieldError with a message", err, err)
				}
				known := false
				for _, k := range kinds {
					known = known || errors.Is(err, k)
				}
				if !known {
					t.Fatalf("error %v of unknown kind %v", err, fe.Err)
				}
				continue
			}
			plain := stripTrailingCommas(body).out
			var want any = &CreateRequest{}
			if update {
				want = &UpdateRequest{}
			}
			if err := json.Unmarshal(plain, want); err != nil {
				t.Fatalf("accepted %q, which encoding/json refuses without its trailing commas: %v", body, err)
			}
			if diff := cmp.Diff(reflect.ValueOf(want).Elem().Interface(), got); diff != "" {
				t.Fatalf("%q decoded unlike encoding/json (-want +got):\n%s", body, diff)
			}
		}
	})
}

// decodeSeeds are FuzzDecode's seeds.
var decodeSeeds = []string{
	deepInfraCreate,
	deepInfraUpdate,
	`{"model_name":"m","gpu":"A100-80GB","hf":{"repo":"o/r","revision":"main","token":"hf_x"},"settings":{"min_instances":0,"max_instances":1},"extra_args":"--dtype half"}`,
	`{"settings":{"min_instances":0,"max_instances":1,},}`,
	`{"a":[1,],"b":{"c":null,},}`,
	`[,]`, `[1,,]`, `{"a":,}`, `{,}`,
	`{"model_name":"m","hf":{"repo":{"x":[[[{"y":[]}]]]}}}`,
	`{"extra_args":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}`,
	`{"num_gpus":1e400,"max_batch_size":-99999999999999999999999}`,
	`{"settings":{"max_instances":1.0e0}}`,
	"{\"model_name\":\"\xff\xfe\"}",
	"{\"model_name\":\"m\xed\xa0\x80\"}",
	`{"model_name":"a","model_name":"b"}`,
	`{"settings":{"max_instances":1,"max_instances":2}}`,
	`{"MODEL_NAME":"x","gpu":"A100-80GB"}`,
	`{"model_name":"m","hf":{"repo":"o/r","revision":"${NOMAD_TOKEN}"}}`,
	`{"model_name":"m","hf":{"repo":"o/r","revision":"../../x"}}`,
	`{"model_name":"\u0000","gpu":"\ud800"}`,
	`null`, `"x"`, `1`, `true`, ``, ` `, `{} {}`, `{"model_name":"m"`, `{"a":"\`,
}
