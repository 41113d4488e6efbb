// Package auth maps bearer tokens to users and carries the caller's user
// name in the request context. Tokens are compared in constant time and
// never logged. The users come from the operator's users file of token
// hashes; a UsersWatcher applies its changes without a restart.
package auth
