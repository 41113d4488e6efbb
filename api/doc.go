// Package api serves thaw's deploy API, compatible with DeepInfra's custom
// LLM API: POST /deploy/llm, GET /deploy/list, GET/PUT/DELETE /deploy/{id};
// and, over the meter's ledger, what deployments cost: GET /usage,
// GET /deploy/{id}/usage, GET /usage/invoices (weekly statements, JSON or
// CSV), GET/PUT /account (spend and the spending limit) and
// GET /account/events. Every handler expects auth.Require in front; a user
// sees and changes only their own deployments and account (another user's
// deployment answers 404, as if it did not exist).
package api
