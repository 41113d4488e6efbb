package deploy

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestStripTrailingCommas(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"object", `{"a": 1,}`, `{"a": 1 }`},
		{"array", `[1, 2,]`, `[1, 2 ]`},
		{"white space before the closer", "{\"a\": 1,\n\t }", "{\"a\": 1 \n\t }"},
		{"nested, DeepInfra's settings", `{"settings": {"min_instances": 0, "max_instances": 1,},}`, `{"settings": {"min_instances": 0, "max_instances": 1 } }`},
		{"after a string", `["x",]`, `["x" ]`},
		{"after true, false, null", `[true,false,null,]`, `[true,false,null ]`},
		{"after an object and an array", `[{},[],]`, `[{},[] ]`},
		{"inside a string stays", `{"a": "1,}",}`, `{"a": "1,}" }`},
		{"escaped quote in a string", `{"a": "\",]",}`, `{"a": "\",]" }`},
		{"escaped backslash ends before the quote", `["\\",]`, `["\\" ]`},
		{"valid JSON unchanged", `{"a": [1, 2], "b": {"c": "d"}}`, `{"a": [1, 2], "b": {"c": "d"}}`},
		{"leading comma stays", `[,]`, `[,]`},
		{"two commas stay", `[1,,]`, `[1,,]`},
		{"comma after a colon stays", `{"a":,}`, `{"a":,}`},
		{"comma after an opener stays", `{,}`, `{,}`},
		{"comma before a value stays", `[1,2]`, `[1,2]`},
		{"unclosed string", `["a,]`, `["a,]`},
		{"empty", ``, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got := stripTrailingCommas(in)
			if diff := cmp.Diff(tt.want, string(got.out)); diff != "" {
				t.Errorf("stripTrailingCommas(%s) (-want +got):\n%s", tt.in, diff)
			}
			if string(in) != tt.in {
				t.Errorf("the input was modified: %s", in)
			}
		})
	}
}

func TestStripTrailingCommasOpen(t *testing.T) {
	tests := []struct {
		in         string
		open       []int
		openString int
	}{
		{`{"a": [1, {`, []int{0, 6, 10}, -1},
		{`{"a": [1], "b": {}}`, nil, -1},
		{`{"a": "x`, []int{0}, 6},
		{`{"a": "x\"`, []int{0}, 6},
	}
	for _, tt := range tests {
		got := stripTrailingCommas([]byte(tt.in))
		if diff := cmp.Diff(tt.open, got.open, cmpopts.EquateEmpty()); diff != "" || got.openString != tt.openString {
			t.Errorf("%s: open (-want +got):\n%s\nopenString = %d, want %d", tt.in, diff, got.openString, tt.openString)
		}
	}
}

// FuzzStripTrailingCommas checks the pre-pass never changes valid JSON,
// only ever blanks commas, and keeps offsets.
func FuzzStripTrailingCommas(f *testing.F) {
	for _, s := range []string{`{"a": 1,}`, `[1,,]`, `["\\",]`, `{"a":"\",]",}`, `[[[[,]]]]`, `{"a":[1,],"b":{"c":null,},}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := string(in)
		got := stripTrailingCommas(in).out
		if string(in) != orig {
			t.Fatalf("input modified")
		}
		if len(got) != len(in) {
			t.Fatalf("length %d, want %d", len(got), len(in))
		}
		for i := range in {
			if got[i] != in[i] && (in[i] != ',' || got[i] != ' ') {
				t.Fatalf("byte %d changed from %q to %q", i, in[i], got[i])
			}
		}
		if json.Valid(in) && string(got) != orig {
			t.Fatalf("valid JSON changed:\n%s\n%s", in, got)
		}
	})
}
