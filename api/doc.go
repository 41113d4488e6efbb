// Package api serves thaw's deploy API, compatible with DeepInfra's custom
// LLM API: POST /deploy/llm, GET /deploy/list, GET/PUT/DELETE /deploy/{id};
// what a deployment is doing: GET /deploy/{id}/events (its journal, as JSON
// or a server-sent event stream), GET /deploy/{id}/instances and
// GET /deploy/{id}/stats (time series), and GET /gpus (the GPU types offered,
// with prices); and, over the meter's ledger, what deployments cost: GET
// /usage, GET /deploy/{id}/usage, GET /usage/invoices (weekly statements,
// JSON or CSV), GET/PUT /account (spend and the spending limit) and GET
// /account/events. Every handler expects auth.Require in front; a user sees
// and changes only their own deployments and account (another user's
// deployment answers 404, as if it did not exist).
package api
