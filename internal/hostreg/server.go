package hostreg

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Store is what the control plane side needs; *store.DB implements it.
type Store interface {
	CreateHostToken(ctx context.Context, hash string, expiresAt time.Time) error
	// ConsumeHostToken: unknown, expired or used → store.ErrNotFound.
	ConsumeHostToken(ctx context.Context, hash string) error
	UpsertHost(ctx context.Context, h store.Host) (store.Host, error)
	GetHost(ctx context.Context, id string) (store.Host, error)
	ListHosts(ctx context.Context) ([]store.Host, error)
}

var _ Store = (*store.DB)(nil)

// Options tune a Server. Zero values take the defaults.
type Options struct {
	CertTTL  time.Duration // agent certificates; default pki.DefaultCertLifetime
	TokenTTL time.Duration // registration tokens; default 24h
	MaxSkew  time.Duration // accepted clock difference of signed requests; default 5m
	// OnHeartbeat, if set, sees every accepted heartbeat after the host row
	// is updated (e.g. to nudge the reconciler when a host returns).
	OnHeartbeat func(ctx context.Context, h store.Host, hb Heartbeat)
	Logger      *slog.Logger
	Now         func() time.Time
}

// Server is the control plane side of the protocol.
type Server struct {
	st   Store
	ca   *pki.CA
	opts Options

	mu   sync.Mutex
	last map[string]time.Time // host+route → newest signed date accepted
}

// NewServer serves registrations for ca's hosts from st.
func NewServer(st Store, ca *pki.CA, opts Options) *Server {
	if opts.CertTTL <= 0 {
		opts.CertTTL = pki.DefaultCertLifetime
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 24 * time.Hour
	}
	if opts.MaxSkew <= 0 {
		opts.MaxSkew = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{st: st, ca: ca, opts: opts, last: map[string]time.Time{}}
}

// tokenEnc: tokens are copied by hand, so lowercase letters and digits.
var tokenEnc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// TokenPrefix starts every registration token (recognisable in logs and
// secret scanners).
const TokenPrefix = "hrt_"

// HashToken is the hex SHA-256 under which a token is stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CreateToken makes a one-time registration token valid for ttl (0: the
// server's TokenTTL). Only its hash is stored; show the token once. This is
// what `POST /v1/admin/hosts` and `hearth host add` call.
func (s *Server) CreateToken(ctx context.Context, ttl time.Duration) (token string, expiresAt time.Time, err error) {
	if ttl <= 0 {
		ttl = s.opts.TokenTTL
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails
	token = TokenPrefix + tokenEnc.EncodeToString(b[:])
	expiresAt = s.opts.Now().Add(ttl)
	if err := s.st.CreateHostToken(ctx, HashToken(token), expiresAt); err != nil {
		return "", time.Time{}, fmt.Errorf("hostreg: create token: %w", err)
	}
	return token, expiresAt, nil
}

// Handler serves the three routes; mount it at /v1/hosts/ outside user
// authentication (it authenticates agents itself).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hosts/register", s.register)
	mux.HandleFunc("POST /v1/hosts/{id}/heartbeat", s.heartbeat)
	mux.HandleFunc("POST /v1/hosts/{id}/renew", s.renew)
	return mux
}

// httpError is an error with the status and message a client sees.
type httpError struct {
	status int
	msg    string
	err    error // cause, for logs
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func fail(status int, msg string, err error) error { return &httpError{status, msg, err} }

const maxBody = 1 << 20

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	body, err := readBody(r)
	if err == nil {
		err = decode(body, &req)
	}
	if err == nil {
		var res RegisterResponse
		res, err = s.doRegister(r.Context(), req)
		if err == nil {
			s.reply(w, r, http.StatusOK, res)
			return
		}
	}
	s.replyErr(w, r, err)
}

func (s *Server) doRegister(ctx context.Context, req RegisterRequest) (RegisterResponse, error) {
	req.Name = strings.TrimSpace(req.Name)
	switch {
	case req.Token == "":
		return RegisterResponse{}, fail(http.StatusUnauthorized, "registration token required", nil)
	case req.Name == "":
		return RegisterResponse{}, fail(http.StatusBadRequest, "name required", nil)
	}
	if _, _, err := net.SplitHostPort(req.Address); err != nil {
		return RegisterResponse{}, fail(http.StatusBadRequest, "address must be host:port", err)
	}
	// Check the CSR before spending the token on a request that cannot work.
	if _, err := pki.ParseCSRPEM([]byte(req.CSRPEM)); err != nil {
		return RegisterResponse{}, fail(http.StatusBadRequest, "invalid csr_pem", err)
	}
	if err := s.st.ConsumeHostToken(ctx, HashToken(req.Token)); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return RegisterResponse{}, fail(http.StatusUnauthorized, "invalid, expired or used registration token", nil)
		}
		return RegisterResponse{}, err
	}
	now := s.opts.Now()
	h, err := s.st.UpsertHost(ctx, store.Host{
		ID:      store.NewShortID(),
		Name:    req.Name,
		Address: req.Address,
		Status:  store.HostReady,
		VCPUs:   req.Capacity.VCPUs, MemoryMB: req.Capacity.MemoryMB, DiskMB: req.Capacity.DiskMB,
		// Counts as a heartbeat: a host that never sends another is marked
		// unreachable by the Monitor like any other.
		LastHeartbeat: now,
	})
	if err != nil {
		return RegisterResponse{}, err
	}
	certPEM, err := s.ca.SignCSR([]byte(req.CSRPEM), h.ID, s.opts.CertTTL, h.Address)
	if err != nil {
		return RegisterResponse{}, err
	}
	s.opts.Logger.Info("host registered", "host", h.ID, "name", h.Name, "address", h.Address)
	return RegisterResponse{HostID: h.ID, CertPEM: string(certPEM), CAPEM: string(s.ca.CertPEM())}, nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var hb Heartbeat
	hostID, body, err := s.authenticate(r)
	if err == nil {
		err = decode(body, &hb)
	}
	if err == nil {
		var h store.Host
		h, err = s.recordHeartbeat(r.Context(), hostID, hb)
		if err == nil {
			if s.opts.OnHeartbeat != nil {
				s.opts.OnHeartbeat(r.Context(), h, hb)
			}
			s.reply(w, r, http.StatusOK, HeartbeatResponse{Status: string(h.Status), ServerTime: s.opts.Now().UTC()})
			return
		}
	}
	s.replyErr(w, r, err)
}

func (s *Server) recordHeartbeat(ctx context.Context, hostID string, hb Heartbeat) (store.Host, error) {
	h, err := s.st.GetHost(ctx, hostID)
	if errors.Is(err, store.ErrNotFound) {
		return h, fail(http.StatusNotFound, "host not registered (deleted?)", nil)
	}
	if err != nil {
		return h, err
	}
	was := h.Status
	if h.Status != store.HostDraining { // draining is the operator's call
		h.Status = store.HostReady
	}
	h.VCPUs, h.MemoryMB, h.DiskMB = hb.VCPUs, hb.MemoryMB, hb.DiskMB
	h.UsedVCPUs, h.UsedMemoryMB, h.UsedDiskMB = hb.UsedVCPUs, hb.UsedMemoryMB, hb.UsedDiskMB
	h.SandboxCount = hb.SandboxCount
	h.LastHeartbeat = s.opts.Now()
	h, err = s.st.UpsertHost(ctx, h)
	if err != nil {
		return h, err
	}
	if was != h.Status {
		s.opts.Logger.Info("host is back", "host", h.ID, "status", h.Status, "was", was)
	}
	return h, nil
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	var req RenewRequest
	hostID, body, err := s.authenticate(r)
	if err == nil {
		err = decode(body, &req)
	}
	if err == nil {
		var h store.Host
		h, err = s.st.GetHost(r.Context(), hostID)
		if errors.Is(err, store.ErrNotFound) {
			err = fail(http.StatusNotFound, "host not registered (deleted?)", nil)
		}
		if err == nil {
			var certPEM []byte
			certPEM, err = s.ca.SignCSR([]byte(req.CSRPEM), hostID, s.opts.CertTTL, h.Address)
			if err != nil {
				err = fail(http.StatusBadRequest, "invalid csr_pem", err)
			} else {
				s.opts.Logger.Info("host certificate renewed", "host", hostID)
				s.reply(w, r, http.StatusOK, RenewResponse{CertPEM: string(certPEM), CAPEM: string(s.ca.CertPEM())})
				return
			}
		}
	}
	s.replyErr(w, r, err)
}

// authenticate identifies the agent calling r (see the package comment)
// and checks it is the host named in the path. It returns the body read.
func (s *Server) authenticate(r *http.Request) (string, []byte, error) {
	body, err := readBody(r)
	if err != nil {
		return "", nil, err
	}
	now := s.opts.Now()
	var (
		cert   *x509.Certificate
		signed time.Time
	)
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert = r.TLS.PeerCertificates[0] // verified again below, against our CA
	} else {
		cert, signed, err = signedCert(r, body)
		if err != nil {
			return "", nil, fail(http.StatusUnauthorized, "agent authentication failed", err)
		}
		if d := now.Sub(signed); d > s.opts.MaxSkew || d < -s.opts.MaxSkew {
			return "", nil, fail(http.StatusUnauthorized, "request date outside the allowed clock skew; check the agent's clock", nil)
		}
	}
	hostID, err := s.ca.Verify(cert, now, x509.ExtKeyUsageClientAuth)
	if err != nil || hostID == "" {
		return "", nil, fail(http.StatusUnauthorized, "agent certificate not accepted", err)
	}
	if want := r.PathValue("id"); hostID != want {
		return "", nil, fail(http.StatusForbidden, "certificate is for another host", nil)
	}
	if !signed.IsZero() {
		key := hostID + " " + r.URL.Path
		s.mu.Lock()
		prev, seen := s.last[key]
		ok := !seen || signed.After(prev)
		if ok {
			s.last[key] = signed
		}
		s.mu.Unlock()
		if !ok {
			return "", nil, fail(http.StatusUnauthorized, "replayed or reordered request", nil)
		}
	}
	return hostID, body, nil
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, fail(http.StatusBadRequest, "cannot read body", err)
	}
	return b, nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fail(http.StatusBadRequest, "invalid JSON body", err)
	}
	return nil
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.opts.Logger.Debug("hostreg: write response", "path", r.URL.Path, "err", err)
	}
}

// replyErr is where every error of this package is handled: logged once,
// mapped to a status; internal causes never reach the client.
func (s *Server) replyErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{status: http.StatusInternalServerError, msg: "internal error", err: err}
	}
	lvl := slog.LevelInfo
	if he.status >= 500 {
		lvl = slog.LevelError
	}
	s.opts.Logger.Log(r.Context(), lvl, "hostreg: request refused", "path", r.URL.Path, "status", he.status, "err", err)
	s.reply(w, r, he.status, errorBody{Error: he.msg})
}
