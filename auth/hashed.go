package auth

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
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
	u := &Users{byHash: map[[32]byte]string{}}
	for user, h := range hashes {
		u.byHash[h] = user
	}
	return u
}

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

// LoadUsersFile reads the users file at path (see ParseUsers).
func LoadUsersFile(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: users file: %w", err)
	}
	defer f.Close()
	hashes, err := ParseUsers(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(hashes) == 0 {
		return nil, fmt.Errorf("auth: users file %s lists no user", path)
	}
	return NewUsersFromHashes(hashes), nil
}
