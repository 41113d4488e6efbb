// Package console serves thaw's web console: a single-page application
// (plain ES modules, no build step) embedded in the binary with go:embed.
//
// Handler answers browsers' page requests (GET or HEAD with an Accept that
// includes text/html) on the console's URLs with the application's
// index.html, and serves its static files under /console/assets/ to any
// client. Everything else goes to the notFound handler it wraps, so API
// clients keep thaw's JSON 404. Every response it writes carries a strict
// Content-Security-Policy (no inline script or style), nosniff and
// no-referrer.
//
// The console's URLs:
//
//	/                                   deployments dashboard
//	/console/new                        create a deployment
//	/console/deployments/{deploy_id}    a deployment's page
//	/console/usage                      usage, statements and the spending limit
//	/{owner}/{model}                    a model's demo (chat playground)
//	/{owner}/{model}/api                a model's API snippets
//
// The application talks only to thaw's public API, with the user's token
// from sessionStorage. The charting library, uPlot, is vendored under
// assets/vendor/uplot with its license and version.
package console
