package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/thawhq/thaw/routing"
)

// GrantTTL is how long a grant is valid after it is issued: the edge sends
// the request on at once, so a grant is only ever checked within a moment of
// its issue; a short life bounds what a copy of it is worth.
const GrantTTL = time.Minute

// Grants issues and verifies grants (routing.GrantHeader): the edge's proof
// that it authenticated a request, which replaces the caller's token past the
// edge. Envoy's direct route removes the caller's Authorization (no model
// server ever sees a caller's token); a request on it reaches an activator
// when its deployment lost its last instance in between, and the activator
// authenticates it by its grant.
//
// It does so with a key shared by the control plane
// (which issues them in /authz) and the activators (which verify them).
//
// A grant names one user and one deployment and expires after GrantTTL: it
// lets its bearer send inference requests to that one deployment, as that
// user, for a minute. The model server a direct request reaches sees it
// (Envoy cannot remove a header for one priority of a cluster only) and can
// do nothing with it but call itself.
//
// The key can be replaced while grants are issued and checked (SetKey):
// the shared copy in Redis is rebuildable state, and every holder follows it.
type Grants struct {
	key atomic.Pointer[[]byte]
}

// ErrShortKey is returned for a grant key under 32 bytes.
var ErrShortKey = errors.New("auth: grant key must be at least 32 bytes")

// NewGrants returns Grants with key.
func NewGrants(key []byte) (*Grants, error) {
	g := &Grants{}
	if err := g.SetKey(key); err != nil {
		return nil, err
	}
	return g, nil
}

// SetKey replaces the key: grants issued with the old one no longer verify.
func (g *Grants) SetKey(key []byte) error {
	if len(key) < 32 {
		return ErrShortKey
	}
	k := append([]byte(nil), key...)
	g.key.Store(&k)
	return nil
}

// Key returns a copy of the key.
func (g *Grants) Key() []byte { return append([]byte(nil), *g.key.Load()...) }

// NewGrantKey returns a random key for NewGrants.
func NewGrantKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return k
}

// Issue returns a grant for user on deployID, valid until now+GrantTTL.
func (g *Grants) Issue(user, deployID string, now time.Time) string {
	body := strings.Join([]string{
		base64.RawURLEncoding.EncodeToString([]byte(user)),
		base64.RawURLEncoding.EncodeToString([]byte(deployID)),
		strconv.FormatInt(now.Add(GrantTTL).Unix(), 10),
	}, ".")
	return body + "." + g.mac(body)
}

// Verify returns the user and deployment of grant if it is genuine and
// unexpired at now.
func (g *Grants) Verify(grant string, now time.Time) (user, deployID string, ok bool) {
	i := strings.LastIndexByte(grant, '.')
	if i < 0 || !hmac.Equal([]byte(grant[i+1:]), []byte(g.mac(grant[:i]))) {
		return "", "", false
	}
	parts := strings.Split(grant[:i], ".")
	if len(parts) != 3 {
		return "", "", false
	}
	u, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	d, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	exp, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || now.Unix() > exp || len(u) == 0 || len(d) == 0 {
		return "", "", false
	}
	return string(u), string(d), true
}

func (g *Grants) mac(body string) string {
	m := hmac.New(sha256.New, *g.key.Load())
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

type scopeKey struct{}

// Scope returns the deployment a request authenticated by a grant is limited
// to; ok is false for a request authenticated by its token.
func Scope(ctx context.Context) (deployID string, ok bool) {
	deployID, ok = ctx.Value(scopeKey{}).(string)
	return deployID, ok
}

// RequireOrGrant is Require that also accepts, in place of a token, a
// genuine unexpired grant (routing.GrantHeader); such a request's context carries
// the grant's deployment (Scope). The grant header never goes further.
func (u *Users) RequireOrGrant(g *Grants, next http.Handler) http.Handler {
	withToken := u.Require(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		grant := r.Header.Get(routing.GrantHeader)
		if grant == "" || g == nil || r.Header.Get("Authorization") != "" {
			r.Header.Del(routing.GrantHeader)
			withToken.ServeHTTP(w, r)
			return
		}
		r.Header.Del(routing.GrantHeader)
		user, deployID, ok := g.Verify(grant, time.Now())
		if !ok {
			unauthorized(w, "invalid_grant", "invalid or expired edge grant; send Authorization: Bearer <token>")
			return
		}
		ctx := context.WithValue(WithUser(r.Context(), user), scopeKey{}, deployID)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
