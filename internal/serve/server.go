package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/igpt/igpt/internal/storage"
)

//go:embed assets
var assets embed.FS

// Options configure a Server.
type Options struct {
	// Root is the output root: a local folder or gs://bucket/prefix.
	Root string
	// Addr is the address to listen on (default 127.0.0.1:8080).
	Addr string
	// Token, when set, is required of every request (?token=, the cookie
	// it sets, or Authorization: Bearer). Listen generates one for a
	// non-loopback address when it is empty.
	Token string
	// Poll is how often a live stream looks at a running stage's folder
	// (default 1s).
	Poll time.Duration
	// JobTimeout bounds one completion or checkpoint picture (default 2m);
	// HandlerTimeout every request that does not stream (default 60s).
	JobTimeout, HandlerTimeout time.Duration
	// MaxQueue is how many jobs may wait per model (default 8).
	MaxQueue int
	// Log receives the server's log lines (default slog.Default()).
	Log *slog.Logger
}

// Server serves one root. It reads and never writes it.
type Server struct {
	root      string
	opt       Options
	log       *slog.Logger
	ls        lister
	headlines headlineCache
	host      string
	now       func() time.Time
	tmpl      *template.Template

	qmu    sync.Mutex
	queues map[string]*queue // per model (train key)
	jobs   jobTable

	imgMu    sync.Mutex
	imgCache map[string][]byte // checkpoint pictures, by key/checkpoint/kind

	// beforeJob, when set (tests), runs in the model's queue before each
	// job's work.
	beforeJob func(ctx context.Context, kind string)
	// afterToken, when set (tests), runs after each sampled position of a
	// completion.
	afterToken func(done, total int)
	// abandonAfter: a job nobody has watched for this long is cancelled,
	// so a client that went away does not hold the model.
	abandonAfter time.Duration
}

// Token is the access token requests need ("" on a loopback address
// when none was given).
func (s *Server) Token() string { return s.opt.Token }

// New checks the root and makes a Server.
func New(ctx context.Context, opt Options) (*Server, error) {
	if opt.Root == "" {
		return nil, errors.New("serve: give --root DIR (or gs://bucket/prefix), the root igpt run wrote")
	}
	root := strings.TrimRight(opt.Root, "/")
	if !storage.IsGCS(root) {
		fi, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("serve: root %s: %w (give the folder igpt run wrote with --root)", root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("serve: root %s is a file; give the folder igpt run wrote", root)
		}
	}
	if opt.Addr == "" {
		opt.Addr = "127.0.0.1:8080"
	}
	if opt.Poll <= 0 {
		opt.Poll = time.Second
	}
	if opt.JobTimeout <= 0 {
		opt.JobTimeout = 2 * time.Minute
	}
	if opt.HandlerTimeout <= 0 {
		opt.HandlerTimeout = 60 * time.Second
	}
	if opt.MaxQueue <= 0 {
		opt.MaxQueue = 8
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if !Loopback(opt.Addr) && opt.Token == "" {
		opt.Token = NewToken() // never open to the network without one
	}
	host, _ := os.Hostname()
	tmpl, err := template.New("").Funcs(template.FuncMap{"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}}).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, err
	}
	return &Server{root: root, opt: opt, log: opt.Log, host: host, now: time.Now, tmpl: tmpl,
		abandonAfter: 10 * time.Second, queues: map[string]*queue{}, jobs: jobTable{m: map[string]*job{}}, imgCache: map[string][]byte{}}, nil
}

// Loopback reports whether addr's host is a loopback address or
// "localhost" (an empty host listens everywhere: not loopback).
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewToken returns a random access token.
func NewToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Handler is the server's whole HTTP handler: every route behind the host
// and token checks; routes that do not stream have a timeout.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	timed := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, http.TimeoutHandler(h, s.opt.HandlerTimeout, "igpt serve: the request took too long"))
	}
	timed("GET /{$}", s.handleOverview)
	timed("GET /api/index", s.handleIndex)
	timed("GET /run/{stage}/{key}", s.handleRunPage)
	timed("GET /api/run/{stage}/{key}", s.handleRun)
	timed("GET /api/metrics/{stage}/{key}", s.handleMetrics)
	timed("GET /file/{stage}/{key}/{name...}", s.handleFile)
	timed("GET /api/steps/{key}", s.handleSteps)
	timed("GET /img/step/{key}/{ckpt}/{kind}", s.handleStepImage)
	timed("POST /api/complete", s.handleComplete)
	timed("GET /compare", s.handleComparePage)
	mux.HandleFunc("GET /api/events/{stage}/{key}", s.handleEvents) // streams
	mux.HandleFunc("GET /api/jobs/{id}", s.handleJobEvents)         // streams
	static, _ := fs.Sub(assets, "assets")
	timed("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)).ServeHTTP)
	return s.guard(mux)
}

// guard refuses requests for another host (DNS rebinding of a loopback
// server), without the token when one is set, with an encoded slash or
// backslash in the path, and cross-site POSTs.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Frame-Options", "DENY")
		if Loopback(s.opt.Addr) && !loopbackHost(r.Host) {
			http.Error(w, "igpt serve: this server answers only to localhost; open it as http://"+s.opt.Addr+"/", http.StatusMisdirectedRequest)
			return
		}
		if s.opt.Token != "" && !s.tokenOK(w, r) {
			http.Error(w, "igpt serve: open the URL with the access token igpt serve printed (…/?token=…)", http.StatusUnauthorized)
			return
		}
		raw := strings.ToLower(r.URL.EscapedPath())
		if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(r.URL.Path, "\\") {
			http.Error(w, "igpt serve: encoded slashes are not served", http.StatusBadRequest)
			return
		}
		if r.Method == http.MethodPost {
			if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
				http.Error(w, "igpt serve: cross-site request refused", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

const tokenCookie = "igpt_token"

// tokenOK checks the request's token (query, cookie or bearer header) in
// constant time; a right token in the query sets the cookie, so the page's
// own requests carry it.
func (s *Server) tokenOK(w http.ResponseWriter, r *http.Request) bool {
	eq := func(t string) bool { return subtle.ConstantTimeCompare([]byte(t), []byte(s.opt.Token)) == 1 }
	if t := r.URL.Query().Get("token"); t != "" && eq(t) {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		return true
	}
	if c, err := r.Cookie(tokenCookie); err == nil && eq(c.Value) {
		return true
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && eq(t) {
		return true
	}
	return false
}

// Listen serves until ctx ends. It refuses a non-loopback address without
// a token by making one, and logs the URL to open (with the token).
func (s *Server) Listen(ctx context.Context, ready func(url string)) error {
	l, err := net.Listen("tcp", s.opt.Addr)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w (pick another --addr)", s.opt.Addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	url := "http://" + l.Addr().String() + "/"
	if s.opt.Token != "" {
		url += "?token=" + s.opt.Token
	}
	s.log.Info("igpt serve: open this URL", "url", url, "root", s.root)
	if ready != nil {
		ready(url)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	}
}

// writeJSON writes v as JSON.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// httpError logs err and writes msg with the code.
func (s *Server) httpError(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.log.Warn("igpt serve: request failed", "path", r.URL.Path, "err", err)
	}
	http.Error(w, err.Error(), code)
}
