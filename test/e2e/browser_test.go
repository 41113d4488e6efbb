package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// testCSP is the console's policy (the contract of issue 13).
const testCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// favicon is a 1x1 PNG: without one, the browser's request for
// /favicon.ico fails, which is a console error.
var favicon, _ = base64.StdEncoding.DecodeString("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")

// browserSite serves the pages TestBrowser drives, all under testCSP.
func browserSite() http.Handler {
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", testCSP)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte("<!doctype html><html><head><title>t</title></head><body>" + body + "</body></html>"))
		}
	}
	mux.HandleFunc("/clean", page(`<form id="f"><input name="n" id="n"><select id="s"><option>a</option><option>b</option></select>
<button type="button" id="go">go</button></form><p id="out" data-x="1"></p><p id="hidden" hidden>h</p>
<script src="/app.js"></script>`))
	mux.HandleFunc("/app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(`document.getElementById("s").addEventListener("change", (e) => {
  document.getElementById("out").dataset.x = e.target.value; });
document.getElementById("go").addEventListener("click", () => {
  document.getElementById("out").textContent = "hello " + document.getElementById("n").value; });
if (location.search === "?fail") { fetch("/denied"); }
if (location.search === "?throw") { setTimeout(() => { throw new Error("boom"); }, 0); }`))
	})
	mux.HandleFunc("/favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(favicon)
	})
	mux.HandleFunc("/denied", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"no"}`, http.StatusUnauthorized)
	})
	mux.HandleFunc("/inline", page(`<p id="x">x</p><script>document.title = "ran";</script>`))
	mux.HandleFunc("/style", page(`<p id="x" style="color: red">x</p>`))
	return mux
}

// TestBrowser drives Chromium against pages under the console's CSP: the
// helpers act as a user would, screenshots have the window's size, and the
// console problems a test must fail on are caught (an inline script or
// style the CSP refuses, an uncaught exception, a failed load) unless
// allowed.
func TestBrowser(t *testing.T) {
	srv := httptest.NewServer(browserSite())
	defer srv.Close()
	t.Setenv("THAW_SCREENSHOTS", t.TempDir())
	b := BrowserT(t, BrowserConfig{})
	p := b.NewPage(t, 2*time.Minute)
	p.Step = 10 * time.Second

	p.Navigate(srv.URL + "/clean")
	p.SetValue("#n", "ada")
	p.SetValue("#s", "b")
	p.Click("#go")
	if got := p.Text("#out"); got != "hello ada" {
		t.Errorf("#out after the click = %q, want %q", got, "hello ada")
	}
	if got := p.Attr("#out", "data-x"); got != "b" {
		t.Errorf("data-x after the select's change event = %q, want b", got)
	}
	if n := p.Count("form [id]"); n != 3 {
		t.Errorf("Count(form [id]) = %d, want 3", n)
	}
	if p.Visible("#hidden") || !p.Visible("#out") {
		t.Errorf("Visible: #hidden %v (want false), #out %v (want true)", p.Visible("#hidden"), p.Visible("#out"))
	}
	if bad := p.Problems(); len(bad) != 0 {
		t.Errorf("problems on a clean page: %q", bad)
	}
	checkScreenshot(t, p.Screenshot("clean"), 1280, 800)

	cases := []struct{ path, want string }{
		{"/inline", "CSP violation: script-src"},
		{"/style", "CSP violation: style-src"},
		{"/clean?throw", "boom"},
		{"/clean?fail", "401"},
	}
	for _, c := range cases {
		p.Navigate(srv.URL + c.path)
		p.Until(5*time.Second, "a console problem containing "+c.want, func() bool {
			return strings.Contains(strings.Join(p.Problems(), "\n"), c.want)
		})
		p.Allow(c.want)
		p.Allow("violates the following Content Security Policy") // Chromium's own words
		p.Allow("boom")                                           // an exception is reported both as such and by the page's error event
		if bad := p.Problems(); len(bad) != 0 {
			t.Errorf("%s: problems left after Allow(%q): %q", c.path, c.want, bad)
		}
		p.CheckConsole()
	}
}

// checkScreenshot fails t unless path is a PNG of w x h pixels.
func checkScreenshot(t *testing.T, path string, w, h int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if got := img.Bounds().Size(); got.X != w || got.Y != h {
		t.Errorf("%s is %dx%d, want %dx%d", path, got.X, got.Y, w, h)
	}
}

// TestChromiumPathMissing: a THAW_CHROMIUM that is not there is an error
// that Need does not turn into a skip.
func TestChromiumPathMissing(t *testing.T) {
	t.Setenv("THAW_CHROMIUM", "/nonexistent/chromium")
	_, err := ChromiumPath()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/chromium") {
		t.Fatalf("ChromiumPath() error = %v, want one naming /nonexistent/chromium", err)
	}
	if errors.Is(err, ErrMissing) {
		t.Errorf("the error wraps ErrMissing (a skip outside CI): %v", err)
	}
}
