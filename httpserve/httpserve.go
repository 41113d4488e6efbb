package httpserve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultHeaderTimeout = 30 * time.Second
	DefaultBodyTimeout   = 60 * time.Second
	DefaultIdleTimeout   = 120 * time.Second
	DefaultShutdown      = 30 * time.Second
)

// Config configures a Server. The zero value uses the defaults.
type Config struct {
	// HeaderTimeout bounds reading a request's headers. Default 30s.
	HeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's body, from when its headers
	// were read to its last byte. Default 60s.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection (HTTP/1.1) or an HTTP/2
	// connection with no stream after this long. Default 120s.
	IdleTimeout time.Duration
	// ShutdownGrace is how long in-flight requests get on shutdown.
	// Default 30s.
	ShutdownGrace time.Duration
	// MaxConcurrentStreams bounds the streams of one HTTP/2 connection.
	// Default 1000: an edge proxy (Envoy) multiplexes held requests over a
	// few connections instead of paying a connection per held request.
	MaxConcurrentStreams int
}

func (c Config) withDefaults() Config {
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdown
	}
	if c.MaxConcurrentStreams <= 0 {
		c.MaxConcurrentStreams = 1000
	}
	return c
}

// New returns an http.Server serving h with cfg's limits, speaking HTTP/1.1
// and cleartext HTTP/2 (h2c) on the same port.
func New(cfg Config, h http.Handler) *http.Server {
	cfg = cfg.withDefaults()
	srv := &http.Server{
		Handler:           BodyDeadline(cfg.BodyTimeout, h),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxConcurrentStreams}
	return srv
}

// Serve serves h on ln with cfg's limits until ctx is done, then shuts down
// gracefully: in-flight requests and streams get cfg.ShutdownGrace.
func Serve(ctx context.Context, cfg Config, ln net.Listener, h http.Handler) error {
	cfg = cfg.withDefaults()
	srv := New(cfg, h)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// BodyDeadline cuts a request whose body does not arrive within d: reads of
// the body fail once d has passed since the handler started. The deadline is
// lifted as soon as the body has been read to its end, so what
// the handler does afterwards (hold the request, stream the answer) is not
// bounded by it. Requests without a body are not touched.
func BodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			next.ServeHTTP(w, r) // a writer without deadlines (tests)
			return
		}
		b := &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		r.Body = b
		// A body the handler left unread (or closed early) keeps its
		// deadline: net/http discards the rest of it after the handler,
		// and that is bounded too.
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline when the body ends.
type deadlineBody struct {
	io.ReadCloser
	lift func()
	once sync.Once
}

func (b *deadlineBody) liftOnce() { b.once.Do(b.lift) }

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.liftOnce()
	}
	return n, err
}

// IsTimeout reports whether err (from reading a request body) is the body
// deadline passing: such a request is answered 408.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
