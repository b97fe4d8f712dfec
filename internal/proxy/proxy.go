// Package proxy carries sandbox traffic from clients to guests: the envd
// API (port 49983) and any service a sandbox listens on.
//
// Requests are routed two ways, as the E2B SDKs and browsers send them:
//
//   - headers E2b-Sandbox-Id and E2b-Sandbox-Port on any path (one origin
//     for every sandbox: what E2B_SANDBOX_URL points at);
//   - the host name <port>-<sandboxID>.<domain> (Options.Domain).
//
// A Resolver turns (sandbox, port) into where the request goes: the host
// agent's proxy endpoint or the guest's address directly. Responses stream
// without buffering (Connect server streams, SSE) and WebSocket upgrades
// pass through. The proxy does not authenticate: envd checks the sandbox's
// X-Access-Token on every call, and the proxy forwards it untouched. Ports
// other than envd's are as open as the guest service makes them (E2B's
// model: a sandbox's URL is the capability).
//
// Errors are JSON {code, message} with code the HTTP status (404 unknown
// sandbox, 502 unreachable, 409 paused without auto-resume, 400 bad route).
// One exception: envd's GET /health of an unknown sandbox is 502, which is
// how the E2B SDK's isRunning() recognises a sandbox that is gone.
// Requests speaking the Connect protocol get the same status as a Connect
// error instead (code "not_found", "unavailable", ...), so Connect clients
// such as the E2B SDK raise their not-found/timeout errors rather than a
// protocol error.
package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/forwarded"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
)

// EnvdPort is where envd listens in every guest.
const EnvdPort = 49983

var (
	// ErrNotFound: no such sandbox (or it is being destroyed).
	ErrNotFound = errors.New("sandbox not found")
	// ErrPaused: the sandbox is paused; the proxy tries AutoResume.
	ErrPaused = errors.New("sandbox is paused")
	// ErrNotRunning: the sandbox exists but cannot take traffic now
	// (starting, resuming, failed). Wrap it with the state for the message.
	ErrNotRunning = errors.New("sandbox is not running")
)

// Target is where one request goes.
type Target struct {
	// URL is the base: scheme and host, optionally a path prefix the
	// request's path is appended to (e.g. an agent's
	// /sandboxes/{id}/proxy/{port}).
	URL *url.URL
	// Header is set on the forwarded request (e.g. the agent's token),
	// replacing any client value of the same names.
	Header http.Header
	// Pool names the kept-alive connections the request may reuse (with
	// the default Transport); empty: the sandbox's ID. A route straight to
	// a guest names its network slot here, because connections into a
	// namespace that a pause and resume replaced are dead.
	Pool string
}

// Resolver finds sandboxes for the proxy.
type Resolver interface {
	// Resolve returns where traffic for port of a running sandbox goes.
	// Errors: ErrNotFound, ErrPaused, ErrNotRunning (wrapped), or any
	// other error (reported as 502).
	Resolve(ctx context.Context, sandboxID string, port int) (Target, error)
	// AutoResume resumes a paused sandbox whose owner enabled auto-resume
	// and reports whether it did; false when the sandbox did not ask for it.
	AutoResume(ctx context.Context, sandboxID string) (bool, error)
}

// Options tune a Proxy.
type Options struct {
	// Domain enables host routing (<port>-<id>.<Domain>); empty: headers only.
	Domain string
	// Transport reaches targets; default: direct (no HTTP_PROXY)
	// connections pooled per sandbox.
	Transport http.RoundTripper
	// SignedURLMaxAge, when set, refuses signed envd file URLs (E2B
	// downloadUrl/uploadUrl) that carry no signature_expiration or one
	// further ahead than this; envd itself enforces an expiry when there
	// is one. Zero: URLs without an expiry are accepted, as the SDK signs
	// none unless asked (useSignatureExpiration).
	SignedURLMaxAge time.Duration
	// Now is the clock for SignedURLMaxAge; nil: time.Now.
	Now    func() time.Time
	Logger *slog.Logger // nil: discard
}

// Proxy is the sandbox traffic handler.
type Proxy struct {
	res    Resolver
	domain string // lower case, no leading dot
	log    *slog.Logger
	rp     *httputil.ReverseProxy
	pools  *hostwire.SandboxTransports // nil with a caller's Transport

	signedMaxAge time.Duration
	now          func() time.Time
}

var _ http.Handler = (*Proxy)(nil)

// New returns a Proxy over res.
func New(res Resolver, o Options) *Proxy {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var pools *hostwire.SandboxTransports
	if o.Transport == nil {
		pools = hostwire.NewSandboxTransports()
		o.Transport = routedPools{pools}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Proxy{res: res, domain: strings.TrimPrefix(strings.ToLower(o.Domain), "."), log: o.Logger, pools: pools,
		signedMaxAge: o.SignedURLMaxAge, now: o.Now}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: o.Transport,
		// Copy errors mid-body (a guest closing a stream) are routine.
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
		// -1: flush every write, so server streams, SSE and long polls
		// reach the client as the guest produces them.
		FlushInterval: -1,
		// The guest answered: the Transport may still be reading the
		// request body (see hostwire.FullDuplex).
		ModifyResponse: func(resp *http.Response) error {
			if rt, ok := resp.Request.Context().Value(routeKey{}).(route); ok {
				hostwire.FullDuplex(rt.client)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rt, _ := r.Context().Value(routeKey{}).(route)
			p.log.DebugContext(r.Context(), "proxy: upstream failed", "sandbox_id", rt.id, "port", rt.port, "err", err)
			if pools != nil {
				pools.Reset(rt.pool())
			}
			if r.Context().Err() != nil {
				return // the client left; nobody to answer
			}
			writeError(w, r, http.StatusBadGateway, "sandbox "+rt.id+" port "+strconv.Itoa(rt.port)+" is not reachable")
		},
	}
	return p
}

// route is a parsed request destination.
type route struct {
	id     string
	port   int
	target Target
	client http.ResponseWriter // the answer to the client
}

type routeKey struct{}

// pool is the connection pool of the route's target.
func (rt route) pool() string {
	if rt.target.Pool != "" {
		return rt.target.Pool
	}
	return rt.id
}

// Matches reports whether r is sandbox traffic (routing headers, or a host
// name under the sandbox domain), for a top-level router that sends it here
// before the API.
func (p *Proxy) Matches(r *http.Request) bool {
	if r.Header.Get(hostwire.HeaderSandboxID) != "" {
		return true
	}
	_, _, ok := p.hostRoute(r.Host)
	return ok
}

// hostRoute parses <port>-<id>.<domain>.
func (p *Proxy) hostRoute(host string) (id, port string, ok bool) {
	if p.domain == "" {
		return "", "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	label, ok := strings.CutSuffix(host, "."+p.domain)
	if !ok || strings.Contains(label, ".") {
		return "", "", false
	}
	port, id, ok = strings.Cut(label, "-")
	return id, port, ok
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var id, portStr string
	if id = r.Header.Get(hostwire.HeaderSandboxID); id != "" {
		portStr = r.Header.Get(hostwire.HeaderSandboxPort)
		if portStr == "" {
			portStr = strconv.Itoa(EnvdPort)
		}
	} else if hid, hport, ok := p.hostRoute(r.Host); ok {
		id, portStr = hid, hport
	} else {
		writeError(w, r, http.StatusBadRequest, "not sandbox traffic: send "+hostwire.HeaderSandboxID+" and "+hostwire.HeaderSandboxPort+" headers or use a <port>-<sandboxID> host name")
		return
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		writeError(w, r, http.StatusBadRequest, "invalid sandbox port "+strconv.Quote(portStr))
		return
	}
	if !validID(id) {
		// IDs are DNS labels: anything else cannot exist.
		writeError(w, r, http.StatusNotFound, "sandbox "+strconv.Quote(id)+" not found")
		return
	}
	if port == EnvdPort {
		if msg := p.checkSignedURL(r); msg != "" {
			writeError(w, r, http.StatusUnauthorized, msg)
			return
		}
	}
	target, err := p.resolve(r.Context(), id, port)
	if err != nil {
		p.resolveError(w, r, id, port, err)
		return
	}
	ctx := context.WithValue(r.Context(), routeKey{}, route{id: id, port: port, target: target, client: w})
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// checkSignedURL applies SignedURLMaxAge to a signed envd file URL (one
// that authenticates by its signature, not the access token header); it
// returns why the URL is refused, or "".
func (p *Proxy) checkSignedURL(r *http.Request) string {
	if p.signedMaxAge <= 0 || r.URL.Path != "/files" || r.Header.Get(envd.AccessTokenHeader) != "" {
		return ""
	}
	q := r.URL.Query()
	if q.Get("signature") == "" {
		return ""
	}
	exp := q.Get("signature_expiration")
	if exp == "" {
		return "this server accepts only expiring signed file URLs: sign with an expiry (E2B SDK: useSignatureExpiration) of at most " + p.signedMaxAge.String()
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "invalid signature_expiration"
	}
	if time.Unix(secs, 0).After(p.now().Add(p.signedMaxAge)) {
		return "signed file URL expires too late: this server accepts at most " + p.signedMaxAge.String() + " ahead"
	}
	return ""
}

// resolve resolves, auto-resuming a paused sandbox once when it asked for it.
func (p *Proxy) resolve(ctx context.Context, id string, port int) (Target, error) {
	t, err := p.res.Resolve(ctx, id, port)
	if !errors.Is(err, ErrPaused) {
		return t, err
	}
	resumed, rerr := p.res.AutoResume(ctx, id)
	if rerr != nil {
		return Target{}, errors.Join(ErrPaused, rerr)
	}
	if !resumed {
		return Target{}, err
	}
	p.log.InfoContext(ctx, "proxy: auto-resumed sandbox", "sandbox_id", id)
	return p.res.Resolve(ctx, id, port)
}

func (p *Proxy) resolveError(w http.ResponseWriter, r *http.Request, id string, port int, err error) {
	switch {
	case errors.Is(err, ErrNotFound) && port == EnvdPort && r.URL.Path == "/health":
		// The E2B SDK's isRunning() probes envd's /health and reads 502 as
		// "not running" (E2B's own proxy answers 502 for gone sandboxes);
		// a 404 there would make it throw instead of returning false.
		writeError(w, r, http.StatusBadGateway, "sandbox "+id+" not found")
	case errors.Is(err, ErrNotFound):
		writeError(w, r, http.StatusNotFound, "sandbox "+id+" not found")
	case errors.Is(err, ErrPaused):
		p.log.DebugContext(r.Context(), "proxy: sandbox paused", "sandbox_id", id, "err", err)
		writeError(w, r, http.StatusConflict, "sandbox "+id+" is paused; resume it (Sandbox.connect) or create it with auto-resume")
	case errors.Is(err, ErrNotRunning):
		writeError(w, r, http.StatusConflict, err.Error())
	default:
		p.log.WarnContext(r.Context(), "proxy: resolve sandbox", "sandbox_id", id, "err", err)
		writeError(w, r, http.StatusBadGateway, "sandbox "+id+" is not reachable")
	}
}

// rewrite points the outbound request at the resolved target. The client's
// Host stays (guest web servers may route on it); routing headers go.
func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey{}).(route)
	pr.SetURL(rt.target.URL)
	pr.Out.Host = pr.In.Host
	pr.Out.Header.Del(hostwire.HeaderSandboxID)
	pr.Out.Header.Del(hostwire.HeaderSandboxPort)
	for k, vs := range rt.target.Header {
		pr.Out.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	pr.SetXForwarded()
	// Behind a TLS proxy the client's scheme is the (trusted) header's.
	pr.Out.Header.Set("X-Forwarded-Proto", forwarded.Scheme(pr.In))
}

func validID(id string) bool {
	if id == "" || len(id) > 63 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// writeError answers in the caller's protocol: a Connect error for Connect
// requests, else E2B's {code, message}.
func writeError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/connect+"):
		// Streaming Connect: errors travel in the end-of-stream message of
		// a 200 response (Connect protocol, "Error end-of-stream").
		end, _ := json.Marshal(map[string]any{"error": connectErr{Code: connectCode(status), Message: msg}})
		frame := make([]byte, 5, 5+len(end))
		frame[0] = 0x02 // end-stream flag
		binary.BigEndian.PutUint32(frame[1:], uint32(len(end)))
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(frame, end...))
	case r.Header.Get("Connect-Protocol-Version") != "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(connectErr{Code: connectCode(status), Message: msg})
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}{status, msg})
	}
}

type connectErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func connectCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_argument"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "failed_precondition"
	default:
		return "unavailable"
	}
}

// routedPools sends a request routed by the Proxy through its sandbox's
// pool.
type routedPools struct{ *hostwire.SandboxTransports }

func (p routedPools) RoundTrip(r *http.Request) (*http.Response, error) {
	rt, _ := r.Context().Value(routeKey{}).(route)
	return p.Get(rt.pool()).RoundTrip(r)
}
