package client

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolve(t *testing.T) {
	list := `[
	{"deploy_id":"d-1","model_name":"llama","full_name":"dev/llama"},
	{"deploy_id":"d-2","model_name":"Llama","full_name":"dev/Llama"},
	{"deploy_id":"d-3","model_name":"d-1","full_name":"dev/d-1"},
	{"deploy_id":"d-4","model_name":"twin","full_name":"dev/twin"},
	{"deploy_id":"d-5","model_name":"twin","full_name":"dev/twin"},
	{"deploy_id":"di-6","model_name":"no-full-name"}
	]`
	tests := []struct {
		ref     string
		wantID  string
		wantErr error
		text    string
	}{
		{ref: "d-2", wantID: "d-2"},
		{ref: "llama", wantID: "d-1"},
		{ref: "Llama", wantID: "d-2"},
		{ref: "dev/llama", wantID: "d-1"},
		{ref: "no-full-name", wantID: "di-6"},
		{ref: "LLAMA", wantErr: ErrNoMatch, text: `no deployment with that id or name: "LLAMA"`},
		{ref: "bob/llama", wantErr: ErrNoMatch, text: `no deployment with that id or name: "bob/llama"`},
		{ref: "d-1", wantErr: ErrAmbiguous, text: `more than one deployment with that id or name: "d-1" is d-1 (dev/llama), d-3 (dev/d-1); use the deploy id`},
		{ref: "twin", wantErr: ErrAmbiguous, text: `more than one deployment with that id or name: "twin" is d-4 (dev/twin), d-5 (dev/twin); use the deploy id`},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			c, f := start(t, 200, list)
			v, err := c.Resolve(context.Background(), tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || err.Error() != tt.text {
					t.Fatalf("Resolve(%q) = %s, %v; want error %q", tt.ref, v.ID, err, tt.text)
				}
			} else if err != nil || v.ID != tt.wantID {
				t.Fatalf("Resolve(%q) = %s, %v; want %s", tt.ref, v.ID, err, tt.wantID)
			}
			want := []seen{{Method: "GET", Path: "/deploy/list", Auth: "Bearer tok-1"}}
			if diff := cmp.Diff(want, f.requests()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveListError(t *testing.T) {
	c, _ := start(t, 401, `{"error":{"message":"invalid token","type":"authentication_error","code":"invalid_token"}}`)
	_, err := c.Resolve(context.Background(), "m")
	var e *Error
	if !errors.As(err, &e) || e.Status != 401 {
		t.Errorf("Resolve = %v, want the server's 401", err)
	}
	if _, err := c.Resolve(context.Background(), " "); err == nil {
		t.Error("Resolve of a blank ref succeeded")
	}
}
