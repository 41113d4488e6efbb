package test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// consoleRun is one walk through the web console of a `thaw dev`, as the
// user dev in a headless Chromium.
type consoleRun struct {
	t    *testing.T
	th   *thawProc
	p    *e2e.Page
	id   string // the deployment made with the create form
	name string // its model_name
}

// TestConsole walks through the web console as a user would, in Chromium,
// against `thaw dev` with a slow simulator (5s startups, 5 tokens/s): log in
// (a bad token first), create a deployment with the form (a bad value first:
// the error on its field), watch it go from deploying to running, chat on the
// demo page and stop mid-stream (the slot is freed), change max_instances,
// read the events and the charts, the API and usage pages, meet another
// user's deployment as "not found", and delete with confirmation. No page
// may log a console error or a CSP violation beyond the failed requests the
// steps cause on purpose. Screenshots of each page go to
// $THAW_SCREENSHOTS (default bin/screenshots).
func TestConsole(t *testing.T) {
	const otherToken = "tok-other-console"
	th := startThaw(t, thawOpts{
		SimStartup:      5 * time.Second,
		TokensPerSecond: 5,
		Users:           []string{"other=" + otherToken},
		Args:            []string{"--stats-interval", "1s"},
	})
	theirs := th.create(t, otherToken, llmRequest("theirs", "A100-80GB", 1, 8, 0, 1))
	th.create(t, devToken, llmRequest("keeper", "H100-80GB", 1, 8, 0, 1))

	b := e2e.BrowserT(t, e2e.BrowserConfig{})
	c := &consoleRun{t: t, th: th, p: b.NewPage(t, 5*time.Minute), name: "console-model"}
	c.login()
	c.createWithError()
	c.createGood()
	c.watchRunning()
	c.chatAndStop()
	c.changeSettings()
	c.eventsAndCharts()
	c.dashboard()
	c.apiPage()
	c.usagePage()
	c.notFound(theirs.ID, "other/theirs")
	c.deleteIt()
}

// step logs the step's name and checks the console of the one before it.
func (c *consoleRun) step(name string) {
	c.t.Helper()
	c.p.CheckConsole()
	c.t.Logf("console step: %s", name)
}

// login: a bad token shows #login-error and keeps the form; the right one
// shows the header with the user's name.
func (c *consoleRun) login() {
	c.step("log in")
	p := c.p
	p.Navigate(c.th.Base + "/")
	p.WaitVisible("#login-form")
	p.SetValue("#login-token", "tok-wrong")
	p.Allow("status of 401") // the browser logs the refused request
	p.Click("#login-submit")
	p.Until(5*time.Second, "#login-error says why", func() bool { return p.Text("#login-error") != "" })
	if !p.Visible("#login-form") || p.Visible("#whoami") {
		p.Fatalf("after a bad token: the login form is gone or #whoami shows")
	}
	p.Screenshot("login-error")
	p.SetValue("#login-token", devToken)
	p.Click("#login-submit")
	p.WaitVisible("#whoami")
	p.Until(5*time.Second, `#whoami says "dev"`, func() bool { return p.Text("#whoami") == "dev" })
	if p.Visible("#login-form") {
		c.t.Errorf("the login form still shows after a good token")
	}
	if got := evalJS[string](p, `sessionStorage.getItem("thaw.token")`); got != devToken {
		c.t.Errorf("sessionStorage thaw.token = %q, want the token", got)
	}
}

// evalJS is e2e.Eval, short for this file.
func evalJS[T any](p *e2e.Page, js string) T { return e2e.Eval[T](p, js) }

// fillCreate fills the create form with c.name and the given instances.
func (c *consoleRun) fillCreate(minInst, maxInst int) {
	p := c.p
	p.SetValue(`[name="model_name"]`, c.name)
	p.SetValue(`[name="gpu"]`, "A100-80GB")
	p.SetValue(`[name="num_gpus"]`, "1")
	p.SetValue(`[name="max_batch_size"]`, "8")
	p.SetValue(`[name="hf.repo"]`, "meta-llama/Llama-2-7b-chat-hf")
	p.SetValue(`[name="settings.min_instances"]`, strconv.Itoa(minInst))
	p.SetValue(`[name="settings.max_instances"]`, strconv.Itoa(maxInst))
}

// createWithError: min_instances over max_instances (a rule no HTML
// attribute can check) gets the API's message on that field, and only
// there.
func (c *consoleRun) createWithError() {
	c.step("create: a bad value")
	p := c.p
	p.Click("#nav-new")
	p.WaitVisible("#create-form")
	p.Until(10*time.Second, "the GPU select filled from GET /gpus", func() bool {
		return p.Count(`select[name="gpu"] option[value="A100-80GB"]`) == 1 &&
			p.Count(`select[name="gpu"] option[value="H100-80GB"]`) == 1
	})
	c.fillCreate(3, 2)
	p.Allow(c.th.Base + "/deploy/llm:") // the browser logs the refused POST (422)
	p.Click("#create-submit")
	const field = "settings.min_instances"
	errSel := fmt.Sprintf(`.field-error[data-for=%q]`, field)
	p.Until(10*time.Second, errSel+" shows the API's message", func() bool {
		return p.Visible(errSel) && strings.Contains(p.Text(errSel), "must not exceed")
	})
	if got := p.Attr(fmt.Sprintf(`[name=%q]`, field), "aria-invalid"); got != "true" {
		c.t.Errorf("%s: aria-invalid = %q, want true", field, got)
	}
	if n := p.Count(`[aria-invalid="true"]`); n != 1 {
		c.t.Errorf("%d fields marked invalid, want only %s", n, field)
	}
	if !strings.Contains(p.URL(), "/console/new") {
		c.t.Errorf("a refused create left the form: %s", p.URL())
	}
	p.Screenshot("create-error")
}

// createGood: a valid form creates the deployment and opens its page.
func (c *consoleRun) createGood() {
	c.step("create")
	p := c.p
	p.SetValue(`[name="settings.min_instances"]`, "1")
	p.SetValue(`[name="settings.max_instances"]`, "2")
	p.Click("#create-submit")
	p.Until(10*time.Second, "the deployment page opens", func() bool {
		return strings.Contains(p.URL(), "/console/deployments/")
	})
	p.WaitVisible("#deployment")
	c.id = p.Attr("#deployment", "data-deploy-id")
	if !strings.HasSuffix(p.URL(), "/console/deployments/"+c.id) || c.id == "" {
		p.Fatalf("#deployment data-deploy-id %q does not match the URL", c.id)
	}
	d := c.th.get(c.t, c.id)
	if d.ModelName != c.name || d.Settings.MinInstances != 1 || d.Settings.MaxInstances != 2 || d.Config.GPU != "A100-80GB" {
		c.t.Errorf("the API's deployment is not what the form said: %+v", d)
	}
}

// watchRunning: the page shows the status go from deploying (an instance
// starting, 5s) to running, live.
func (c *consoleRun) watchRunning() {
	c.step("deploying -> running")
	p := c.p
	var seen []string
	p.Until(30*time.Second, "#deployment-status running and one running instance", func() bool {
		s := strings.TrimSpace(p.Text("#deployment-status"))
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		return s == "running" && p.Count(`#instances li[data-state="running"]`) == 1
	})
	if seen[0] == "running" {
		c.t.Errorf("the page never showed the deployment before it ran (statuses seen: %q)", seen)
	}
	c.t.Logf("statuses shown: %q", seen)
}

// statsNow is the live part of GET /deploy/{id}/stats as dev.
type statsNow struct {
	Running  int `json:"running"`
	InFlight int `json:"in_flight"`
	Held     int `json:"held"`
}

// stats reads GET /deploy/{id}/stats's "now", failing the test on an error.
func (c *consoleRun) stats() statsNow {
	c.t.Helper()
	r := c.th.do(c.t, http.MethodGet, "/deploy/"+c.id+"/stats", devToken, nil)
	if r.Status != http.StatusOK {
		c.p.Fatalf("GET /deploy/%s/stats: %s", c.id, r)
	}
	var s struct {
		Now statsNow `json:"now"`
	}
	r.decode(c.t, &s)
	return s.Now
}

// assistantText is the text of the last assistant message on the demo page.
func (c *consoleRun) assistantText() string {
	return evalJS[string](c.p, `(() => { const m = document.querySelectorAll("#messages .message.assistant");
  return m.length ? m[m.length - 1].textContent : ""; })()`)
}

// chatAndStop: on the demo page a long answer streams in (its text grows
// between reads, and the server counts the request in flight); Stop ends it
// and frees the slot within seconds, on the deployment page and in the API.
func (c *consoleRun) chatAndStop() {
	c.step("demo: stream and stop")
	p := c.p
	p.Click("#demo-link")
	p.WaitVisible("#chat-form")
	if !strings.HasSuffix(p.URL(), "/dev/"+c.name) {
		c.t.Errorf("#demo-link led to %s, want /dev/%s", p.URL(), c.name)
	}
	p.SetValue("#max-tokens", "2000")
	p.SetValue("#chat-input", "Tell me a long story about GPUs.")
	p.Click("#chat-send")
	p.Until(15*time.Second, `#chat[data-state="streaming"] with some text`, func() bool {
		return p.Attr("#chat", "data-state") == "streaming" && c.assistantText() != ""
	})
	if p.Count("#messages .message.user") != 1 {
		c.t.Errorf("the user's message is not shown once in #messages")
	}
	first := c.assistantText()
	p.Until(5*time.Second, "the answer's text grows as tokens stream in", func() bool {
		return len(c.assistantText()) > len(first)
	})
	p.Until(5*time.Second, "the API counts the streaming request in flight", func() bool {
		return c.stats().InFlight == 1
	})
	p.Until(20*time.Second, "a few words of the answer (for the screenshot)", func() bool { return len(c.assistantText()) >= 60 })
	p.Screenshot("demo-streaming")
	p.Click("#chat-stop")
	p.Until(5*time.Second, `#chat[data-state="stopped"]`, func() bool { return p.Attr("#chat", "data-state") == "stopped" })
	stopped := c.assistantText()
	p.Until(5*time.Second, "GET /deploy/{id}/stats now.in_flight back to 0", func() bool { return c.stats().InFlight == 0 })
	time.Sleep(time.Second) // five tokens' time: nothing more may arrive
	if got := c.assistantText(); got != stopped {
		c.t.Errorf("the answer kept growing after Stop: %q -> %q", stopped, got)
	}
	p.Navigate(c.th.Base + "/console/deployments/" + c.id)
	p.WaitVisible("#in-flight")
	p.Until(5*time.Second, "#in-flight shows 0", func() bool { return strings.TrimSpace(p.Text("#in-flight")) == "0" })
}

// changeSettings: max_instances changed on the page is what the API says.
func (c *consoleRun) changeSettings() {
	c.step("settings")
	p := c.p
	p.SetValue("#settings-max", "3")
	p.Click("#settings-save")
	p.Until(5*time.Second, "the API's settings.max_instances is 3", func() bool {
		return c.th.get(c.t, c.id).Settings.MaxInstances == 3
	})
	if msg := p.Text("#settings-error"); msg != "" {
		c.t.Errorf("#settings-error after a good save: %q", msg)
	}
}

// eventsAndCharts: the events feed has the creation and, live, the
// settings change; the charts have points once samples exist.
func (c *consoleRun) eventsAndCharts() {
	c.step("events and charts")
	p := c.p
	for _, typ := range []string{"deployment.created", "instance.ready", "deployment.updated"} {
		sel := fmt.Sprintf(`#events li[data-type=%q]`, typ)
		p.Until(10*time.Second, "an event "+sel, func() bool { return p.Count(sel) > 0 })
	}
	order := evalJS[[]string](p, `Array.from(document.querySelectorAll("#events li"), (e) => e.dataset.type)`)
	if slices.Index(order, "deployment.updated") > slices.Index(order, "deployment.created") {
		c.t.Errorf("#events is not newest first: %q", order)
	}
	for _, series := range []string{"instances", "requests", "tokens"} {
		sel := fmt.Sprintf(`#charts div.chart[data-series=%q]`, series)
		points := fmt.Sprintf(`Math.max(0, ...Array.from(document.querySelectorAll(%s), (e) => Number(e.dataset.points) || 0))`,
			strconv.Quote(sel))
		p.Until(40*time.Second, sel+" has data-points > 0", func() bool { return evalJS[int](p, points) > 0 })
	}
	p.Screenshot("deployment")
	evalJS[bool](p, `(document.getElementById("charts").scrollIntoView(), true)`)
	p.Screenshot("deployment-metrics")
}

// dashboard: the deployment's row says it runs, with its GPU and min/max.
func (c *consoleRun) dashboard() {
	c.step("dashboard")
	p := c.p
	p.Click("#nav-deployments")
	row := fmt.Sprintf(`#deployments tr[data-deploy-id=%q]`, c.id)
	p.WaitVisible(row)
	cell := func(col string) string { return p.Text(fmt.Sprintf(`%s td[data-col=%q]`, row, col)) }
	p.Until(10*time.Second, "the row says running", func() bool { return strings.TrimSpace(cell("status")) == "running" })
	for col, want := range map[string]string{"model": c.name, "gpu": "A100-80GB", "minmax": "3", "instances": "1 running"} {
		if got := cell(col); !strings.Contains(got, want) {
			c.t.Errorf("dashboard %s = %q, want it to contain %q", col, got, want)
		}
	}
	if p.Count("#deployments tr[data-deploy-id]") != 2 {
		c.t.Errorf("the dashboard does not list exactly dev's two deployments")
	}
	p.Screenshot("dashboard")
}

// apiPage: the snippets use this origin's OpenAI base URL and the model's
// full name.
func (c *consoleRun) apiPage() {
	c.step("API page")
	p := c.p
	p.Navigate(c.th.Base + "/dev/" + c.name + "/api")
	for _, lang := range []string{"curl", "python", "javascript"} {
		sel := fmt.Sprintf(`pre.snippet[data-lang=%q]`, lang)
		p.WaitVisible(sel)
		text := p.Text(sel)
		for _, want := range []string{c.th.Base + "/v1/openai", "dev/" + c.name} {
			if !strings.Contains(text, want) {
				c.t.Errorf("%s snippet lacks %q:\n%s", lang, want, text)
			}
		}
		if p.Count(fmt.Sprintf(`button.copy[data-lang=%q]`, lang)) != 1 {
			c.t.Errorf("no copy button for the %s snippet", lang)
		}
	}
	p.Screenshot("api")
}

// usagePage: spend and statements render.
func (c *consoleRun) usagePage() {
	c.step("usage page")
	p := c.p
	p.Click("#nav-usage")
	p.WaitVisible("#spend-week")
	p.Until(10*time.Second, "#spend-week shows an amount", func() bool { return strings.Contains(p.Text("#spend-week"), "$") })
	p.WaitVisible("#limit-input")
	p.Screenshot("usage")
}

// notFound: another user's deployment and demo page are "not found".
func (c *consoleRun) notFound(theirID, theirModel string) {
	c.step("another user's deployment")
	p := c.p
	p.Allow("status of 404")
	for _, path := range []string{"/console/deployments/" + theirID, "/" + theirModel} {
		p.Navigate(c.th.Base + path)
		p.WaitVisible("#not-found")
		if got := p.Text("#not-found"); !strings.Contains(strings.ToLower(got), "not found") {
			c.t.Errorf("%s: #not-found says %q", path, got)
		}
		if p.Count("#deployment") != 0 || p.Count("#chat-form") != 0 {
			c.t.Errorf("%s shows the other user's deployment", path)
		}
	}
}

// deleteIt: Cancel keeps the deployment; Delete with confirmation removes
// it from the API and the dashboard.
func (c *consoleRun) deleteIt() {
	c.step("delete")
	p := c.p
	p.Navigate(c.th.Base + "/console/deployments/" + c.id)
	p.Click("#delete")
	p.Click("#cancel-delete")
	p.Until(5*time.Second, "the confirm dialog closes", func() bool { return !p.Visible("#confirm-delete") })
	if r := c.th.do(c.t, http.MethodGet, "/deploy/"+c.id, devToken, nil); r.Status != http.StatusOK {
		c.t.Fatalf("Cancel deleted the deployment: GET /deploy/%s: %s", c.id, r)
	}
	p.Click("#delete")
	p.Click("#confirm-delete")
	p.Until(10*time.Second, "GET /deploy/{id} says 404", func() bool {
		return c.th.do(c.t, http.MethodGet, "/deploy/"+c.id, devToken, nil).Status == http.StatusNotFound
	})
	p.Navigate(c.th.Base + "/")
	p.WaitVisible(`#deployments tr[data-deploy-id]`) // keeper's row: the table has loaded
	if n := p.Count(fmt.Sprintf(`#deployments tr[data-deploy-id=%q]`, c.id)); n != 0 {
		c.t.Errorf("the deleted deployment is still on the dashboard")
	}
	c.p.CheckConsole()
}
