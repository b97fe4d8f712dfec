package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"golang.org/x/time/rate"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyPrincipal
)

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

func principalFrom(ctx context.Context) service.Principal {
	p, _ := ctx.Value(keyPrincipal).(service.Principal)
	return p
}

// requestID tags each request with X-Request-Id: the client's, when it is a
// short safe token, else a fresh one. It is echoed in the response and logs.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !safeToken(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequestID, id)))
	})
}

func safeToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// statusWriter records the status and size for the access log. Unwrap lets
// http.ResponseController reach Flush on the real writer (file streaming).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "http request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", clientIP(r)), slog.String("request_id", requestIDFrom(r.Context())))
	})
}

// recoverPanics turns a handler panic into a logged 500 instead of a dropped
// connection (http.ErrAbortHandler keeps its meaning).
func recoverPanics(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			log.ErrorContext(r.Context(), "handler panic", "panic", v, "stack", string(debug.Stack()),
				"request_id", requestIDFrom(r.Context()))
			writeError(w, http.StatusInternalServerError, "internal error (request id "+requestIDFrom(r.Context())+")")
		}()
		next.ServeHTTP(w, r)
	})
}

// clientIP is the TCP peer. Forwarded headers are not trusted: a reverse
// proxy in front must do its own limiting (or this needs a trusted-proxy
// setting).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ipLimiter is a token bucket per client IP. Idle buckets are swept so the
// map stays bounded by recent clients.
type ipLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const limiterIdle = 10 * time.Minute

func newIPLimiter(limit rate.Limit, burst int, now func() time.Time) *ipLimiter {
	return &ipLimiter{limit: limit, burst: burst, now: now, buckets: map[string]*bucket{}, lastSweep: now()}
}

// allow reports whether ip may proceed; when not, how long until it may.
func (l *ipLimiter) allow(ip string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > limiterIdle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > limiterIdle {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b, ok := l.buckets[ip]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

func rateLimit(l *ipLimiter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := l.allow(clientIP(r)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			writeError(w, http.StatusTooManyRequests, "too many requests; retry later")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handlerFunc is a thin handler: it writes its success response and returns
// errors for respondError to map.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// endpoint wraps one route with its body limit and authentication.
func (s *server) endpoint(rt route) http.Handler {
	limit := s.maxJSONBytes
	if rt.body == bodyUpload {
		limit = s.maxUploadBytes
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if rt.auth != authNone {
			p, err := s.authenticate(r, rt.auth)
			if err != nil {
				s.respondError(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), keyPrincipal, p))
		}
		if err := rt.handle(w, r); err != nil {
			s.respondError(w, r, err)
		}
	})
}

// authenticate resolves the caller. X-API-Key wins when present (programs);
// otherwise a Bearer session token (people).
func (s *server) authenticate(r *http.Request, mode authMode) (service.Principal, error) {
	ctx := r.Context()
	if key := r.Header.Get("X-API-Key"); key != "" {
		if mode != authTeam {
			return service.Principal{}, service.Unauthenticated("this endpoint needs a Bearer session token, not an API key")
		}
		return s.svc.AuthenticateAPIKey(ctx, key)
	}
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		if mode == authTeam {
			return service.Principal{}, service.Unauthenticated("missing credentials: send X-API-Key or Authorization: Bearer <token>")
		}
		return service.Principal{}, service.Unauthenticated("missing credentials: send Authorization: Bearer <token>")
	}
	return s.svc.AuthenticateToken(ctx, strings.TrimSpace(token), r.Header.Get("X-Team-ID"))
}
