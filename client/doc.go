// Package client is a small Go client of thaw's deploy API (the
// DeepInfra-compatible /deploy/* endpoints): create, list, get, update and
// delete deployments with a bearer token, and find one by deploy id or
// model name (Resolve); read what they cost (Usage, Invoices, InvoicesCSV)
// and the caller's spending limit and events (Account, SetAccount, Events).
//
// Every method returns *Error for a non-2xx answer, carrying the server's
// OpenAI-shaped error ({"error":{"message","type","param","code"}}), and wraps
// network errors with the address it tried, so a command-line tool can print
// the error as is. The Raw variants return the server's JSON unchanged, for
// tools that pass it on (thaw deploy --json).
package client
