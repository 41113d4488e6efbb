package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// HashPrefix starts every token hash in a users file.
const HashPrefix = "sha256:"

// ErrUsersFile is returned (wrapped, with the line number) for a users
// file line that cannot be parsed.
var ErrUsersFile = errors.New("auth: bad users file")

// HashToken returns the users-file form of token: "sha256:<hex>", the
// same as `printf %s "$TOKEN" | sha256sum`.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return HashPrefix + hex.EncodeToString(h[:])
}

// NewUsersFromHashes builds Users from user -> sha256 of the token, so
// tokens never need to be stored in clear.
func NewUsersFromHashes(hashes map[string][32]byte) *Users {
	u := &Users{}
	u.Replace(hashes)
	return u
}

// UsersChange is what Replace changed, by user name, each list sorted.
// Names are not secret (they appear in logs); tokens and hashes never do.
type UsersChange struct {
	Added    []string // users who were not there before
	Removed  []string // users who are gone: their tokens no longer authenticate
	NewToken []string // users whose token changed: the old one no longer authenticates
}

// Empty reports whether nothing changed.
func (c UsersChange) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.NewToken) == 0
}

// Replace makes hashes (user -> sha256 of the token) the users: every
// lookup that starts after Replace returns sees them and only them. It is
// safe to call while requests are authenticated.
func (u *Users) Replace(hashes map[string][32]byte) UsersChange {
	byHash := make(map[[32]byte]string, len(hashes))
	for user, h := range hashes {
		byHash[h] = user
	}
	old := u.byHash.Swap(&byHash)
	var c UsersChange
	if old == nil {
		return c
	}
	before := make(map[string][32]byte, len(*old))
	for h, user := range *old {
		before[user] = h
	}
	for user, h := range hashes {
		switch prev, ok := before[user]; {
		case !ok:
			c.Added = append(c.Added, user)
		case prev != h:
			c.NewToken = append(c.NewToken, user)
		}
	}
	for user := range before {
		if _, ok := hashes[user]; !ok {
			c.Removed = append(c.Removed, user)
		}
	}
	slices.Sort(c.Added)
	slices.Sort(c.Removed)
	slices.Sort(c.NewToken)
	return c
}

// Len returns the number of users.
func (u *Users) Len() int { return len(*u.byHash.Load()) }

// ParseUsers reads a users file: one user per line, `<name>
// sha256:<64 hex digits of the token's SHA-256>`; blank lines and lines
// starting with # are ignored. Names are unique and contain no '/'.
func ParseUsers(r io.Reader) (map[string][32]byte, error) {
	out := map[string][32]byte{}
	seen := map[[32]byte]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%w: line %d: want `<name> sha256:<hex>`", ErrUsersFile, n)
		}
		name, hash := fields[0], fields[1]
		hexHash, ok := strings.CutPrefix(hash, HashPrefix)
		b, err := hex.DecodeString(hexHash)
		switch {
		case strings.Contains(name, "/"):
			return nil, fmt.Errorf("%w: line %d: user name %q contains '/'", ErrUsersFile, n, name)
		case !ok || err != nil || len(b) != sha256.Size:
			return nil, fmt.Errorf("%w: line %d: token hash of %s: want sha256: and 64 hex digits", ErrUsersFile, n, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: line %d: user %s listed twice", ErrUsersFile, n, name)
		}
		h := [32]byte(b)
		if other, dup := seen[h]; dup {
			return nil, fmt.Errorf("%w: line %d: users %s and %s have the same token", ErrUsersFile, n, other, name)
		}
		out[name], seen[h] = h, name
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: read users file: %w", err)
	}
	return out, nil
}

// ErrNoUsers is returned (wrapped) for a users file that lists no user:
// loading it would lock everyone out, which is never what an operator
// means (a file truncated while it is rewritten reads that way).
var ErrNoUsers = errors.New("auth: users file lists no user")

// LoadUsersFile reads the users file at path (see ParseUsers).
func LoadUsersFile(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: users file: %w", err)
	}
	hashes, err := parseUsersFile(path, data)
	if err != nil {
		return nil, err
	}
	return NewUsersFromHashes(hashes), nil
}

// parseUsersFile parses data, the content of the users file at path,
// refusing a file with no user (ErrNoUsers).
func parseUsersFile(path string, data []byte) (map[string][32]byte, error) {
	hashes, err := ParseUsers(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(hashes) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoUsers, path)
	}
	return hashes, nil
}
