// Package auth maps bearer tokens to users and carries the caller's user
// name in the request context. Tokens are compared in constant time and
// never logged.
package auth
