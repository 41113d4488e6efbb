package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// DefaultChromium is where Debian's chromium package (scripts/chromium.sh,
// `make deps`) puts the browser the console tests drive.
const DefaultChromium = "/usr/bin/chromium"

// ChromiumPath is the browser the console tests drive: $THAW_CHROMIUM when
// set, otherwise DefaultChromium. Its error does not wrap ErrMissing: the web
// console's tests fail without a browser, they never skip.
func ChromiumPath() (string, error) {
	p := os.Getenv("THAW_CHROMIUM")
	if p == "" {
		p = DefaultChromium
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("no Chromium at %s (run `make deps`, which installs it with scripts/chromium.sh, or set THAW_CHROMIUM): %v", p, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable (THAW_CHROMIUM)", p)
	}
	return p, nil
}

// BrowserConfig says how to start one headless Chromium. Zero values pick
// the defaults noted on each field.
type BrowserConfig struct {
	// Bin is the browser; default ChromiumPath().
	Bin string
	// Width and Height are the size of every page's viewport in CSS
	// pixels, which is what a screenshot shows; default 1280x800.
	Width, Height int
}

// Browser is one headless Chromium (--headless=new, --no-sandbox,
// --disable-gpu) with a profile of its own in a temporary directory. It
// dies with the caller: chromedp starts it on a pipe and kills it on Close.
type Browser struct {
	// Bin is the browser's path.
	Bin string
	// Width and Height are every page's viewport (BrowserConfig's).
	Width, Height int

	ctx    context.Context // the browser's first tab; tabs of NewPage derive from it
	cancel context.CancelFunc
	out    *Buffer // the browser's own stdout and stderr
}

// StartBrowser starts Chromium as cfg says and waits until it answers.
func StartBrowser(cfg BrowserConfig) (*Browser, error) {
	if cfg.Bin == "" {
		bin, err := ChromiumPath()
		if err != nil {
			return nil, err
		}
		cfg.Bin = bin
	}
	if cfg.Width == 0 || cfg.Height == 0 {
		cfg.Width, cfg.Height = 1280, 800
	}
	b := &Browser{Bin: cfg.Bin, Width: cfg.Width, Height: cfg.Height, out: &Buffer{Limit: 64 << 10}}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(cfg.Bin),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(cfg.Width, cfg.Height),
		chromedp.CombinedOutput(b.out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	b.ctx = ctx
	b.cancel = func() { cancelCtx(); cancelAlloc() }
	// The first action starts the browser, which lives as long as that
	// action's context: it must be ctx itself, not a deadline below it.
	if err := chromedp.Do(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("starting %s: %w\n%s", cfg.Bin, err, b.out.Tail(4<<10))
	}
	return b, nil
}

// BrowserT is StartBrowser for a test: a browser that is missing or does
// not start fails t (never a skip); Close is registered as a cleanup.
func BrowserT(t testing.TB, cfg BrowserConfig) *Browser {
	t.Helper()
	return startT(t, func() (*Browser, error) { return StartBrowser(cfg) })
}

// Cleanup registers Close for the end of t.
func (b *Browser) Cleanup(t testing.TB) { t.Cleanup(b.Close) }

// Close ends the browser and removes its profile. It is safe to call more
// than once.
func (b *Browser) Close() { b.cancel() }

// ScreenshotDir is where Page.Screenshot writes: $THAW_SCREENSHOTS when set,
// otherwise bin/screenshots of the repository.
func ScreenshotDir() (string, error) {
	if d := os.Getenv("THAW_SCREENSHOTS"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "screenshots"), nil
}

// cspReporter runs in every document before the page's own scripts (the
// DevTools protocol injects it, so the page's CSP does not apply to it) and
// turns each CSP violation into a console error the Page records, with the
// directive and what it blocked: Chromium's own "Refused to ..." message is
// an error too, but the event says exactly what was refused.
const cspReporter = `document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
    " at " + e.sourceFile + ":" + e.lineNumber);
});`

// Page is one browser tab for one test, with a deadline. Every action waits
// at most Step; a failed action fails the test with the page's URL, the
// console problems so far and a screenshot (FAIL-<test>.png in
// ScreenshotDir).
//
// The page records what a user's DevTools console would show in red: calls
// of console.error, uncaught exceptions and unhandled rejections, error
// entries of the browser log (failed loads, "Refused to ..." CSP messages)
// and CSP violations (see cspReporter). CheckConsole fails the test on any
// that Allow did not expect, and the test's cleanup checks once more.
type Page struct {
	// Step bounds each action (a wait, a click, a read); default 15s.
	Step time.Duration

	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	problems []string // console errors not yet checked
	allowed  []string // substrings of expected errors, until the next CheckConsole
}

// NewPage opens a tab that lives until timeout passes or the test ends.
func (b *Browser) NewPage(t testing.TB, timeout time.Duration) *Page {
	t.Helper()
	deadline, cancelDeadline := context.WithTimeout(b.ctx, timeout)
	tab, cancelTab := chromedp.NewContext(deadline)
	p := &Page{Step: 15 * time.Second, t: t, ctx: tab}
	p.cancel = func() { cancelTab(); cancelDeadline() }
	// Subscribe before the first navigation so that no message is lost.
	messages := chromedp.Console(tab)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				p.note(m)
			}
		}
	}()
	_, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: cspReporter})
	if err == nil {
		// The window's size includes what a headed window would spend on
		// its frame; the viewport is what the page and a screenshot get.
		err = chromedp.Do(tab, chromedp.EmulateViewport(int64(b.Width), int64(b.Height)))
	}
	if err != nil {
		p.cancel()
		t.Fatalf("opening a tab: %v\n%s", err, b.out.Tail(4<<10))
	}
	t.Cleanup(func() {
		if !t.Failed() {
			p.CheckConsole()
		}
		p.cancel()
	})
	return p
}

// note records one console message.
func (p *Page) note(m chromedp.ConsoleMessage) {
	where := m.URL
	if where != "" {
		where = fmt.Sprintf(" (%s:%d)", where, m.Line+1)
	}
	src := ""
	if m.Source != "" {
		src = "[" + m.Source + "] "
	}
	p.mu.Lock()
	p.problems = append(p.problems, fmt.Sprintf("%s%s%s", src, m, where))
	p.mu.Unlock()
}

// Allow expects console errors that contain substr (e.g. "status of 401"
// for a login with a bad token, which the browser logs as a failed load)
// until the next CheckConsole.
func (p *Page) Allow(substr string) {
	p.mu.Lock()
	p.allowed = append(p.allowed, substr)
	p.mu.Unlock()
}

// Problems returns the console errors recorded since the last CheckConsole
// that Allow does not expect.
func (p *Page) Problems() []string {
	// A round trip to the page first: events the page sent before its
	// answer are delivered by then.
	_, _ = run(p, chromedp.Evaluate[int]("1"))
	p.mu.Lock()
	defer p.mu.Unlock()
	var bad []string
	for _, m := range p.problems {
		if !containsAny(m, p.allowed) {
			bad = append(bad, m)
		}
	}
	return bad
}

// CheckConsole fails the test (without stopping it) on every console error
// recorded since the last check that Allow does not expect, then forgets
// them and the allowances.
func (p *Page) CheckConsole() {
	p.t.Helper()
	bad := p.Problems()
	p.mu.Lock()
	p.problems, p.allowed = nil, nil
	p.mu.Unlock()
	if len(bad) > 0 {
		p.t.Errorf("console errors or CSP violations on %s:\n  %s", p.URL(), strings.Join(bad, "\n  "))
	}
}

// containsAny reports whether s contains any of subs.
func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// run runs one action within Step, returning its value.
func run[T any](p *Page, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.Step)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// do runs steps within Step, failing the test with what did not happen.
func (p *Page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if _, err := run(p, chromedp.Steps(steps...)); err != nil {
		p.Fatalf("%s: %v", what, err)
	}
}

// Fatalf fails the test now, with the page's URL, the console problems
// recorded so far and a screenshot of the page as it is.
func (p *Page) Fatalf(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	shot := "FAIL-" + strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name())
	if path, err := p.screenshot(shot); err == nil {
		msg += "\nscreenshot: " + path
	}
	p.mu.Lock()
	if len(p.problems) > 0 {
		msg += "\nconsole:\n  " + strings.Join(p.problems, "\n  ")
	}
	p.mu.Unlock()
	p.t.Fatalf("%s\npage: %s", msg, p.URL())
}

// URL is the page's current address ("" when the browser does not answer).
func (p *Page) URL() string {
	u, _ := run(p, chromedp.Location())
	return u
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(url string) {
	p.t.Helper()
	p.do("navigate to "+url, chromedp.Navigate(url))
}

// WaitVisible waits until an element matching the CSS selector sel is
// visible.
func (p *Page) WaitVisible(sel string) {
	p.t.Helper()
	p.do(sel+" visible", chromedp.WaitVisible(chromedp.CSS(sel)))
}

// WaitGone waits until no element matches the CSS selector sel.
func (p *Page) WaitGone(sel string) {
	p.t.Helper()
	p.do(sel+" gone", chromedp.WaitNotPresent(chromedp.CSS(sel)))
}

// Visible reports, without waiting, whether an element matching the CSS
// selector sel is rendered (it and its ancestors take up space).
func (p *Page) Visible(sel string) bool {
	p.t.Helper()
	return Eval[bool](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s);
  return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden"; })()`, jsString(sel)))
}

// Text is the rendered text (innerText) of the first element matching the
// CSS selector sel, once there is one.
func (p *Page) Text(sel string) string {
	p.t.Helper()
	s, err := run(p, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// Attr is the attribute name of the first element matching the CSS
// selector sel, once there is one; "" when it has no such attribute.
func (p *Page) Attr(sel, name string) string {
	p.t.Helper()
	r, err := run(p, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		p.Fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return r.Value
}

// Count is how many elements match the CSS selector sel now.
func (p *Page) Count(sel string) int {
	p.t.Helper()
	return Eval[int](p, fmt.Sprintf("document.querySelectorAll(%s).length", jsString(sel)))
}

// SetValue waits for the form field matching the CSS selector sel to be
// visible, sets its value as a user's typing or choice would, and fires
// its input and change events.
func (p *Page) SetValue(sel, value string) {
	p.t.Helper()
	p.WaitVisible(sel)
	got := Eval[string](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s);
  e.focus(); e.value = %s;
  e.dispatchEvent(new Event("input", {bubbles: true}));
  e.dispatchEvent(new Event("change", {bubbles: true}));
  return e.value; })()`, jsString(sel), jsString(value)))
	if got != value {
		p.Fatalf("set %s to %q: it holds %q (not an option of a select?)", sel, value, got)
	}
}

// Click waits for the element matching the CSS selector sel to be visible
// and clicks it with the mouse.
func (p *Page) Click(sel string) {
	p.t.Helper()
	p.WaitVisible(sel)
	// A click lands where the element was when it was measured: wait until
	// its box holds still (a panel above it may still be loading), as
	// Playwright's "stable" actionability check does.
	var last string
	p.Until(p.Step, sel+" holds still to be clicked", func() bool {
		box := Eval[string](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s);
  if (!e) return ""; const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height].join(","); })()`, jsString(sel)))
		stable := box != "" && box == last
		last = box
		return stable
	})
	p.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Until polls cond every 100ms until it holds, failing the test with what
// when it does not within timeout.
func (p *Page) Until(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if !EventuallyCtx(ctx, 100*time.Millisecond, cond) {
		p.Fatalf("not within %v: %s", timeout, what)
	}
}

// Screenshot saves what the window shows as ScreenshotDir()/<name>.png and
// returns the file's path.
func (p *Page) Screenshot(name string) string {
	p.t.Helper()
	path, err := p.screenshot(name)
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	return path
}

// screenshot is Screenshot without failing the test.
func (p *Page) screenshot(name string) (string, error) {
	dir, err := ScreenshotDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	buf, err := run(p, chromedp.CaptureScreenshot())
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".png")
	return path, os.WriteFile(path, buf, 0o644)
}

// Eval evaluates the JavaScript expression js in p's page (awaiting a
// promise) and decodes its result into a T, failing the test on an error.
// The page's CSP does not apply to it.
func Eval[T any](p *Page, js string) T {
	p.t.Helper()
	v, err := run(p, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		var zero T
		p.Fatalf("evaluate %s: %v", js, err)
		return zero
	}
	return v
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(errors.New("e2e: a string that JSON cannot encode"))
	}
	return string(b)
}
