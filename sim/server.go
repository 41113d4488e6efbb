package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Defaults and limits of Config and of requests.
const (
	// DefaultHost is Config.Host's default: loopback only.
	DefaultHost = "127.0.0.1"
	// DefaultTokensPerSecond is Config.TokensPerSecond's default.
	DefaultTokensPerSecond = 50.0
	// DefaultMaxNumSeqs is Config.MaxNumSeqs's default, vLLM's own.
	DefaultMaxNumSeqs = 256

	// DefaultMaxModelLen is Config.MaxModelLen's default.
	DefaultMaxModelLen = 4096
	// eosAfter is how many tokens the simulated model generates before it
	// emits its end-of-sequence token, for a request that sets no
	// max_tokens and no ignore_eos.
	eosAfter = 16
	// maxBodyBytes bounds a request body.
	maxBodyBytes = 16 << 20
	// shutdownGrace bounds how long Run waits for in-flight requests once
	// its context is done; connections still open after it are closed.
	shutdownGrace = 5 * time.Second
)

// ErrAlreadyRun is returned by Run when the server has been run before.
var ErrAlreadyRun = errors.New("sim: server already run")

// Config configures a Server. The zero value of each optional field means
// its default.
type Config struct {
	// Host is the address to listen on. Default DefaultHost.
	Host string
	// Port is the TCP port to listen on; 0 picks a free one (see Addr).
	Port int
	// Model is the served model name, as vLLM's --served-model-name.
	// Required.
	Model string
	// Startup is how long Run waits, with its port bound, before it answers
	// requests, standing in for loading weights. Default 0.
	Startup time.Duration
	// TokensPerSecond is the generation speed of each request, in tokens
	// per second. Default DefaultTokensPerSecond.
	TokensPerSecond float64
	// MaxNumSeqs is how many requests generate at once, as vLLM's
	// --max-num-seqs; later requests wait in FIFO order.
	// Default DefaultMaxNumSeqs.
	MaxNumSeqs int
	// MaxModelLen is the context length in tokens, as vLLM's
	// --max-model-len: /v1/models reports it, a max_tokens above it is
	// refused (400), and a request's prompt plus output is capped at it.
	// Default DefaultMaxModelLen.
	MaxModelLen int
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// RequestLog, when set, receives a JSON RequestRecord line per
	// inference request as it ends (for tests).
	RequestLog io.Writer
}

// Server is a simulated vLLM OpenAI-compatible model server.
type Server struct {
	cfg      Config
	interval time.Duration // time to generate one token
	log      *slog.Logger
	lim      *limiter
	metrics  *metrics
	created  int64 // unix seconds, reported in /v1/models
	handler  http.Handler

	ready   chan struct{}
	runOnce sync.Once
	// mu guards addr.
	mu   sync.Mutex
	addr string
}

// New validates cfg, fills in defaults and returns a Server. It starts
// nothing: see Run and Handler.
func New(cfg Config) (*Server, error) {
	if cfg.Model == "" {
		return nil, errors.New("sim: model name is required")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("sim: port %d out of range 0-65535", cfg.Port)
	}
	if cfg.Startup < 0 {
		return nil, fmt.Errorf("sim: negative startup delay %v", cfg.Startup)
	}
	if cfg.TokensPerSecond < 0 {
		return nil, fmt.Errorf("sim: negative tokens per second %v", cfg.TokensPerSecond)
	}
	if cfg.MaxNumSeqs < 0 {
		return nil, fmt.Errorf("sim: negative max num seqs %d", cfg.MaxNumSeqs)
	}
	if cfg.MaxModelLen < 0 {
		return nil, fmt.Errorf("sim: negative max model len %d", cfg.MaxModelLen)
	}
	// Zero (checked above: not negative) means the default.
	cfg.Host = cmp.Or(cfg.Host, DefaultHost)
	cfg.TokensPerSecond = cmp.Or(cfg.TokensPerSecond, DefaultTokensPerSecond)
	cfg.MaxNumSeqs = cmp.Or(cfg.MaxNumSeqs, DefaultMaxNumSeqs)
	cfg.MaxModelLen = cmp.Or(cfg.MaxModelLen, DefaultMaxModelLen)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	s := &Server{
		cfg:      cfg,
		interval: time.Duration(float64(time.Second) / cfg.TokensPerSecond),
		log:      cfg.Logger.With("model", cfg.Model),
		lim:      newLimiter(cfg.MaxNumSeqs),
		created:  time.Now().Unix(),
		ready:    make(chan struct{}),
	}
	s.metrics = newMetrics(cfg.Model, s.lim)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /v1/models", s.serveModels)
	mux.HandleFunc("POST /v1/chat/completions", s.serveChat)
	mux.HandleFunc("POST /v1/completions", s.serveCompletion)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("/", serveNoRoute(mux))
	s.handler = mux
	if cfg.RequestLog != nil {
		s.handler = (&requestLog{model: cfg.Model, w: cfg.RequestLog}).wrap(mux)
	}
	return s, nil
}

// Handler returns the server's HTTP handler, for use without Run (for
// example under httptest). It serves at once: there is no startup delay.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready returns a channel closed once Run serves: after the startup delay.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address Run listens on ("host:port"), or "" before Run
// has bound its port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Run binds its port at once, waits Config.Startup, then serves until ctx
// is done. During the startup delay the port accepts connections but no
// request is answered: each waits until the model is loaded, as with a vLLM
// that binds its socket before loading the weights. Once ctx is done it
// stops accepting, gives in-flight requests up to 5 seconds to finish and
// closes the connections left. It returns nil after a shutdown caused by
// ctx, and an error if it cannot listen ("port N is in use", wrapping
// syscall.EADDRINUSE) or serve. A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		return ErrAlreadyRun
	}

	hostPort := net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", hostPort)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("sim: port %d is in use: %w", s.cfg.Port, err)
	}
	if err != nil {
		return fmt.Errorf("sim: listen on %s: %w", hostPort, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()

	s.log.Info("sim loading weights", "addr", ln.Addr().String(), "startup", s.cfg.Startup)
	t := time.NewTimer(s.cfg.Startup)
	select {
	case <-ctx.Done():
		t.Stop()
		ln.Close()
		return nil
	case <-t.C:
	}

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	close(s.ready)
	s.log.Info("sim serving", "addr", ln.Addr().String(),
		"tokens_per_second", s.cfg.TokensPerSecond, "max_num_seqs", s.cfg.MaxNumSeqs)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("sim: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("sim shutdown grace over; closing open connections", "err", err)
		_ = srv.Close() // Close's error is the listener's, already closed.
	}
	<-serveErr // http.ErrServerClosed
	s.log.Info("sim stopped")
	return nil
}

func (s *Server) serveModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{
		Object: "list",
		Data: []modelCard{{
			ID:          s.cfg.Model,
			Object:      "model",
			Created:     s.created,
			OwnedBy:     "thaw-sim",
			Root:        s.cfg.Model,
			MaxModelLen: s.cfg.MaxModelLen,
		}},
	})
}

// serveNoRoute answers what mux has no route for as vLLM does: 405 for a
// path it serves with another method, 404 otherwise, both with vLLM's
// {"detail": ...} body rather than its OpenAI error shape.
func serveNoRoute(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				w.Header().Set("Allow", m)
				writeDetail(w, http.StatusMethodNotAllowed)
				return
			}
		}
		writeDetail(w, http.StatusNotFound)
	}
}
