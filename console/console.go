package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// AssetsPrefix is the URL path the console's static files are served under.
const AssetsPrefix = "/console/assets/"

// CSP is the Content-Security-Policy of every console response: scripts,
// styles, fonts and API calls from thaw's own origin only, no inline script
// or style, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

//go:embed assets
var assets embed.FS

// file is one embedded file, ready to serve.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string // strong, from the content's SHA-256
}

// contentTypes maps the extensions the console ships to their types, so
// they do not depend on the host's MIME database.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// Handler returns the console's handler; requests it does not serve go to
// notFound (thaw's JSON 404).
func Handler(notFound http.Handler) http.Handler {
	files, err := load(assets)
	if err != nil { // the embedded tree is fixed at build time
		panic(fmt.Sprintf("console: %v", err))
	}
	index, ok := files["index.html"]
	if !ok {
		panic("console: assets/index.html is missing")
	}
	return &handler{files: files, index: index, notFound: notFound}
}

// load reads every embedded file under assets/ into memory, keyed by its
// path below assets/.
func load(fsys fs.FS) (map[string]*file, error) {
	files := map[string]*file{}
	err := fs.WalkDir(fsys, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		sum := sha256.Sum256(body)
		files[name] = &file{
			name:  name,
			body:  body,
			ctype: typeOf(name),
			etag:  `"` + hex.EncodeToString(sum[:16]) + `"`,
		}
		return nil
	})
	return files, err
}

// typeOf is a file's Content-Type by its extension; files without a known
// one (LICENSE, VERSION) are plain text.
func typeOf(name string) string {
	if t, ok := contentTypes[path.Ext(name)]; ok {
		return t
	}
	return "text/plain; charset=utf-8"
}

// handler serves the console. It is immutable after Handler returns.
type handler struct {
	files    map[string]*file
	index    *file
	notFound http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.notFound.ServeHTTP(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, AssetsPrefix); ok {
		f := h.asset(rest)
		if f == nil {
			h.notFound.ServeHTTP(w, r)
			return
		}
		serve(w, r, f)
		return
	}
	if IsPage(r.URL.Path) && strings.Contains(r.Header.Get("Accept"), "text/html") {
		serve(w, r, h.index)
		return
	}
	h.notFound.ServeHTTP(w, r)
}

// asset returns the embedded file at rest (the path below AssetsPrefix), or
// nil. Only clean relative paths name a file: "..", "." and empty
// segments, backslashes and index.html (served only as a page) are refused.
func (h *handler) asset(rest string) *file {
	if rest == "" || rest == "index.html" || strings.Contains(rest, `\`) || path.Clean("/"+rest) != "/"+rest {
		return nil
	}
	return h.files[rest]
}

// IsPage reports whether p is one of the console's page URLs: /, /console
// and below it (outside the assets), /{owner}/{model} and
// /{owner}/{model}/api.
func IsPage(p string) bool {
	switch {
	case p == "/" || p == "/console" || p == "/console/":
		return true
	case strings.HasPrefix(p, AssetsPrefix):
		return false
	case strings.HasPrefix(p, "/console/"):
		return true
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for _, s := range seg {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return len(seg) == 2 || (len(seg) == 3 && seg[2] == "api")
}

// serve writes f with the console's headers. Files are revalidated on
// every use (no-cache) against their content hash, so a new thaw binary's
// console is picked up at once and an unchanged one costs a 304.
func serve(w http.ResponseWriter, r *http.Request, f *file) {
	SetSecurityHeaders(w.Header())
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

// SetSecurityHeaders sets the console's security headers on h.
func SetSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}
