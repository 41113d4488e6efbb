package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseUsers(t *testing.T) {
	alice, bob := HashToken("tok-alice"), HashToken("tok-bob")
	tests := []struct {
		name    string
		file    string
		want    map[string]string // user -> token that must authenticate
		wantErr string
	}{
		{
			name: "users, comments and blank lines",
			file: "# operators edit this\n\nalice " + alice + "\n  bob   " + bob + "  \n",
			want: map[string]string{"alice": "tok-alice", "bob": "tok-bob"},
		},
		{name: "clear token", file: "alice tok-alice\n", wantErr: "line 1: token hash of alice"},
		{name: "short hash", file: "alice sha256:abcd\n", wantErr: "line 1: token hash of alice"},
		{name: "three fields", file: "alice " + alice + " extra\n", wantErr: "line 1: want"},
		{name: "slash in name", file: "a/b " + alice + "\n", wantErr: "contains '/'"},
		{name: "duplicate user", file: "alice " + alice + "\nalice " + bob + "\n", wantErr: "line 2: user alice listed twice"},
		{name: "shared token", file: "alice " + alice + "\nbob " + alice + "\n", wantErr: "line 2: users alice and bob have the same token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hashes, err := ParseUsers(strings.NewReader(tt.file))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrUsersFile) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrUsersFile containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := NewUsersFromHashes(hashes)
			got := map[string]string{}
			for _, tok := range tt.want {
				if name, ok := u.Lookup(tok); ok {
					got[name] = tok
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("tokens that authenticate (-want +got):\n%s", diff)
			}
			if _, ok := u.Lookup(alice); ok {
				t.Errorf("the hash itself authenticates")
			}
		})
	}
}

func TestHashToken(t *testing.T) {
	// printf %s tok | sha256sum
	want := "sha256:1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62"
	if got := HashToken("tok"); got != want {
		t.Errorf("HashToken = %q, want %q", got, want)
	}
}
