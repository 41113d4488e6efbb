package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunSimFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no port", []string{"--model", "m"}, "--port is required"},
		{"no model", []string{"--port", "1"}, "--model is required"},
		{"bad port", []string{"--port", "70000", "--model", "m"}, "out of range"},
		{"bad rate", []string{"--port", "1", "--model", "m", "--tokens-per-second", "0"}, "must be positive"},
		{"bad seqs", []string{"--port", "1", "--model", "m", "--max-num-seqs", "-1"}, "must be positive"},
		{"bad startup", []string{"--port", "1", "--model", "m", "--startup", "-1s"}, "negative"},
		{"unknown flag", []string{"--port", "1", "--model", "m", "--nope"}, "not defined"},
		{"extra arg", []string{"--port", "1", "--model", "m", "extra"}, "unexpected arguments"},
		{"not a duration", []string{"--port", "1", "--model", "m", "--startup", "3"}, "invalid value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := runSim(t.Context(), tt.args, io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("runSim(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
	var stderr bytes.Buffer
	if err := runSim(t.Context(), []string{"-h"}, io.Discard, &stderr); err != nil {
		t.Errorf("-h: %v", err)
	}
	t.Logf("usage:\n%s", stderr.String())
}

func TestRunSimServes(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runSim(ctx, []string{"--port", strconv.Itoa(port), "--model", "m", "--startup", "100ms"}, &stdout, &stderr)
	}()
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never served")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"hi","max_tokens":2}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("completion: %v %v", err, resp)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("runSim = %v", err)
	}
	t.Logf("stdout: %s\nstderr: %s", stdout.String(), stderr.String())
}
