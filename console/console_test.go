package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// notFoundJSON stands in for thaw's JSON 404.
var notFoundJSON = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, `{"error":{"code":"not_found"}}`)
})

const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

func do(t *testing.T, method, path, accept string, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	Handler(notFoundJSON).ServeHTTP(rec, r)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPagesByAccept: a browser gets the console on its URLs; an API client
// (no text/html in Accept) and a non-GET get the JSON 404.
func TestPagesByAccept(t *testing.T) {
	for _, tt := range []struct {
		method, path, accept string
		wantHTML             bool
	}{
		{"GET", "/", browserAccept, true},
		{"HEAD", "/", browserAccept, true},
		{"GET", "/console/new", browserAccept, true},
		{"GET", "/console/usage", browserAccept, true},
		{"GET", "/console/deployments/d-123", browserAccept, true},
		{"GET", "/dev/test-model", browserAccept, true},
		{"GET", "/dev/test-model/api", browserAccept, true},
		{"GET", "/", "", false},
		{"GET", "/", "application/json", false},
		{"GET", "/", "*/*", false},
		{"GET", "/dev/test-model", "application/json", false},
		{"POST", "/", browserAccept, false},
		{"DELETE", "/dev/test-model", browserAccept, false},
		{"GET", "/favicon.ico", browserAccept, false},
		{"GET", "/dev/test-model/other", browserAccept, false},
		{"GET", "/a/b/c/d", browserAccept, false},
		{"GET", "/dev//api", browserAccept, false},
	} {
		t.Run(tt.method+" "+tt.path+" "+tt.accept, func(t *testing.T) {
			res := do(t, tt.method, tt.path, tt.accept)
			b := body(t, res)
			if !tt.wantHTML {
				if res.StatusCode != http.StatusNotFound || !strings.Contains(b, `"not_found"`) {
					t.Errorf("got %d %q, want the JSON 404", res.StatusCode, b)
				}
				return
			}
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Fatalf("got %d %s, want 200 text/html", res.StatusCode, res.Header.Get("Content-Type"))
			}
			if tt.method == "GET" && !strings.Contains(b, `<script type="module" src="/console/assets/js/main.js">`) {
				t.Errorf("body is not the console's index.html:\n%s", b)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
		})
	}
}

// TestSecurityHeaders: every console response, page or asset, carries the
// CSP, nosniff and no-referrer.
func TestSecurityHeaders(t *testing.T) {
	for _, path := range []string{"/", "/dev/m/api", "/console/assets/js/main.js", "/console/assets/css/console.css"} {
		res := do(t, "GET", path, browserAccept)
		got := map[string]string{
			"Content-Security-Policy": res.Header.Get("Content-Security-Policy"),
			"X-Content-Type-Options":  res.Header.Get("X-Content-Type-Options"),
			"Referrer-Policy":         res.Header.Get("Referrer-Policy"),
		}
		want := map[string]string{
			"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET %s headers (-want +got):\n%s", path, diff)
		}
	}
}

// TestAssets: static files are served to any client with their type and a
// content-hash ETag that answers 304 when unchanged.
func TestAssets(t *testing.T) {
	for _, tt := range []struct{ path, ctype, contains string }{
		{"/console/assets/js/main.js", "text/javascript; charset=utf-8", "import"},
		{"/console/assets/js/api.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/console/assets/css/console.css", "text/css; charset=utf-8", "{"},
		{"/console/assets/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", "uPlot"},
		{"/console/assets/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8", ".uplot"},
		{"/console/assets/vendor/uplot/LICENSE", "text/plain; charset=utf-8", "MIT"},
		{"/console/assets/vendor/uplot/VERSION", "text/plain; charset=utf-8", "uPlot 1.6.32"},
		{"/console/assets/favicon.svg", "image/svg+xml", "<svg"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			res := do(t, "GET", tt.path, "*/*")
			b := body(t, res)
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tt.ctype || !strings.Contains(b, tt.contains) {
				t.Fatalf("got %d %s (%d bytes), want 200 %s containing %q", res.StatusCode, res.Header.Get("Content-Type"), len(b), tt.ctype, tt.contains)
			}
			etag := res.Header.Get("ETag")
			if len(etag) < 10 || res.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("ETag %q, Cache-Control %q: want a content hash and no-cache", etag, res.Header.Get("Cache-Control"))
			}
			again := do(t, "GET", tt.path, "*/*", "If-None-Match", etag)
			if again.StatusCode != http.StatusNotModified {
				t.Errorf("GET with If-None-Match: %d, want 304", again.StatusCode)
			}
		})
	}
}

// TestAssetsRefused: unknown files, traversal and odd paths get the 404;
// nothing outside assets/ is readable.
func TestAssetsRefused(t *testing.T) {
	for _, path := range []string{
		"/console/assets/",
		"/console/assets/nope.js",
		"/console/assets/index.html",
		"/console/assets/../console.go",
		"/console/assets/js/../../console.go",
		"/console/assets/js/../main.js",
		"/console/assets/./js/main.js",
		"/console/assets//js/main.js",
		`/console/assets/js\main.js`,
		"/console/assets/%2e%2e/doc.go",
	} {
		t.Run(path, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.URL.Path = path // as the mux would hand it over, undecoded tricks included
			if strings.Contains(path, "%") {
				r.URL.Path = strings.ReplaceAll(path, "%2e", ".")
			}
			r.Header.Set("Accept", browserAccept)
			rec := httptest.NewRecorder()
			Handler(notFoundJSON).ServeHTTP(rec, r)
			if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `"not_found"`) {
				t.Errorf("got %d %q, want the JSON 404", rec.Code, rec.Body.String())
			}
		})
	}
}

// TestNoInlineScriptOrStyle: the CSP forbids inline code, so index.html has
// none (it would be blocked, breaking the page).
func TestNoInlineScriptOrStyle(t *testing.T) {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, bad := range []string{"<style", " style=", "onclick=", "onload=", "javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	if n, m := strings.Count(html, "<script"), strings.Count(html, `<script type="module" src=`)+strings.Count(html, "<script src="); n != m {
		t.Errorf("index.html has %d scripts, %d of them from files", n, m)
	}
}

func TestIsPage(t *testing.T) {
	got := map[string]bool{}
	for _, p := range []string{"/", "/console", "/console/x/y", "/console/assets/x", "/a", "/a/b", "/a/b/", "/a/b/api", "/a/b/api/", "/a/../b", "/a/b/c"} {
		got[p] = IsPage(p)
	}
	want := map[string]bool{
		"/": true, "/console": true, "/console/x/y": true, "/console/assets/x": false, "/a": false,
		"/a/b": true, "/a/b/": false, "/a/b/api": true, "/a/b/api/": false, "/a/../b": false, "/a/b/c": false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IsPage (-want +got):\n%s", diff)
	}
}
