// Package api serves thaw's deploy API, compatible with DeepInfra's custom
// LLM API: POST /deploy/llm, GET /deploy/list, GET/PUT/DELETE /deploy/{id}.
// Every handler expects auth.Require in front; a user sees and changes only
// their own deployments (another user's answers 404, as if it did not exist).
package api
