package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisPasswordEnv is the default of --redis-password, which keeps the
// password out of the process list.
const redisPasswordEnv = "THAW_REDIS_PASSWORD"

// redisFlags say how to reach the Redis holding demand, wake signals and
// the published endpoints: its address, TLS and AUTH. thaw server, thaw
// activator and thaw dev share them.
type redisFlags struct {
	// addr is host:port, or a redis:// or rediss:// URL.
	addr string
	// caFile is the PEM file of the CAs the server's certificate must chain
	// to; it turns TLS on for a host:port address.
	caFile string
	// password is --redis-password.
	password string
	// envPassword is $THAW_REDIS_PASSWORD when the flags were registered.
	envPassword string
}

// register adds --redis-addr (described by what), --redis-ca and
// --redis-password to fs.
func (r *redisFlags) register(fs *flag.FlagSet, what string) {
	fs.StringVar(&r.addr, "redis-addr", "", what+": `host:port`, or a URL redis://[user:password@]host:port[/db], or rediss://... for TLS")
	fs.StringVar(&r.caFile, "redis-ca", "", "PEM `file` of the CA certificates Redis's certificate must chain to (default: the system's); with a host:port --redis-addr it turns TLS on")
	r.envPassword = os.Getenv(redisPasswordEnv)
	fs.StringVar(&r.password, "redis-password", "", "Redis AUTH `password`; without it the URL's, else $"+redisPasswordEnv+" (prefer the environment: other users of the host can read a command line)")
}

// redisOptions turns the flags into the client's options: go-redis's
// ParseURL for a URL, TLS (at least 1.2, the host checked against the
// certificate) with rediss:// or --redis-ca, and the password of
// --redis-password, else the URL's, else $THAW_REDIS_PASSWORD.
func (r redisFlags) redisOptions() (*redis.Options, error) {
	opts := &redis.Options{Addr: r.addr}
	if strings.Contains(r.addr, "://") {
		if _, err := url.Parse(r.addr); err != nil {
			// url.Parse's error quotes the URL, password included.
			return nil, errors.New("--redis-addr: not a valid URL (not shown: it may hold a password)")
		}
		var err error
		if opts, err = redis.ParseURL(r.addr); err != nil {
			return nil, fmt.Errorf("--redis-addr %s: %w", r.redacted(), err)
		}
		if opts.TLSConfig == nil && r.caFile != "" {
			return nil, fmt.Errorf("--redis-ca with --redis-addr %s: a redis:// URL is cleartext; use rediss:// for TLS", r.redacted())
		}
	} else if _, _, err := net.SplitHostPort(r.addr); err != nil {
		return nil, fmt.Errorf("--redis-addr %q: want host:port or a redis:// or rediss:// URL", r.addr)
	}
	switch {
	case r.password != "":
		opts.Password = r.password
	case opts.Password == "":
		opts.Password = r.envPassword
	}
	if r.caFile != "" || opts.TLSConfig != nil {
		if opts.TLSConfig == nil {
			host, _, _ := net.SplitHostPort(opts.Addr)
			opts.TLSConfig = &tls.Config{ServerName: host}
		}
		opts.TLSConfig.MinVersion = tls.VersionTLS12
		if r.caFile != "" {
			pool, err := loadCAs(r.caFile)
			if err != nil {
				return nil, fmt.Errorf("--redis-ca: %w", err)
			}
			opts.TLSConfig.RootCAs = pool
		}
	}
	return opts, nil
}

// newRedisClient is the one way thaw builds its Redis client.
func (r redisFlags) newRedisClient() (*redis.Client, error) {
	opts, err := r.redisOptions()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// redacted is --redis-addr with a URL's password replaced by xxxxx, for
// banners, logs and errors.
func (r redisFlags) redacted() string {
	if !strings.Contains(r.addr, "://") {
		return r.addr
	}
	u, err := url.Parse(r.addr)
	if err != nil {
		// url.Parse's error quotes the URL, password included.
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
