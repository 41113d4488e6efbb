package auth

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/thawhq/thaw/httperr"
)

// Users maps tokens to user names. Its users can be replaced at any time
// (Replace, or a UsersWatcher following the users file) while requests are
// authenticated: each lookup sees either the old users or the new ones.
type Users struct {
	// byHash maps sha256(token) to user: the map never holds a token in
	// clear. A stored map is never modified: Replace stores a new one.
	byHash atomic.Pointer[map[[32]byte]string]
}

// NewUsers builds Users from user -> token.
func NewUsers(tokens map[string]string) *Users {
	hashes := make(map[string][32]byte, len(tokens))
	for user, tok := range tokens {
		hashes[user] = sha256.Sum256([]byte(tok))
	}
	return NewUsersFromHashes(hashes)
}

// Lookup returns the user owning token. Only sha256 digests are compared,
// so lookup time does not depend on how much of a token matches.
func (u *Users) Lookup(token string) (string, bool) {
	if token == "" {
		return "", false
	}
	user, ok := (*u.byHash.Load())[sha256.Sum256([]byte(token))]
	return user, ok
}

type ctxKey struct{}

// User returns the authenticated user of the request context.
func User(ctx context.Context) string {
	s, _ := ctx.Value(ctxKey{}).(string)
	return s
}

// WithUser returns ctx carrying user (for tests and internal callers).
func WithUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, ctxKey{}, user)
}

// Require wraps next so that only requests with a valid
// "Authorization: Bearer <token>" reach it; others get 401.
func (u *Users) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			tok, ok = strings.CutPrefix(h, "bearer ")
		}
		if !ok || tok == "" {
			unauthorized(w, "missing_token", "missing API token: send Authorization: Bearer <token>")
			return
		}
		user, ok := u.Lookup(strings.TrimSpace(tok))
		if !ok {
			unauthorized(w, "invalid_token", "invalid API token")
			return
		}
		next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), user)))
	})
}

// unauthorized answers 401 at once and closes the connection: the request
// body, which may be slow or never end, is not read. net/http would
// otherwise read what is left of it, before answering (to reuse the
// connection) or after (to discard it).
func unauthorized(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Connection", "close")
	httperr.Encode(w, http.StatusUnauthorized, code, "", msg)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
