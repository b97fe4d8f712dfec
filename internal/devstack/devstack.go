// Package devstack runs a whole hearth on one machine in one process: the
// control plane (SQLite in the data dir) and a host agent reached over a
// loopback Connect RPC connection, exactly as a remote agent would be. It
// backs `hearth dev` and the end-to-end tests.
//
// On first start it also creates a developer account (a platform admin)
// and an API key, kept in <data-dir>/dev-credentials.json (0600) so every
// later start can print them again. This file holds a plaintext API key on
// purpose: it is a development convenience, never used by `hearth server`.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// HostID is the ID of the in-process host.
const HostID = "local"

// Options configure Start.
type Options struct {
	Config config.Config
	// ImagesFrom, when set and DataDir has no images/, links DataDir/images
	// to ImagesFrom/images so tests reuse images built once.
	ImagesFrom string
	// AgentOptions tweak the in-process agent (DataDir and Logger are set
	// by Start).
	AgentOptions agent.Options
	Logger       *slog.Logger
	// CodeInterpreter bakes the platform template code-interpreter-v1 in
	// the background once the stack serves, when the code-interpreter
	// image exists (citemplate; reused across starts of this data dir).
	CodeInterpreter bool
}

// Credentials are the developer account and key created on first start.
type Credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	APIKey   string `json:"api_key"`
	TeamID   string `json:"team_id"`
}

// Stack is a running dev deployment.
type Stack struct {
	URL          string // control plane base URL
	DataDir      string
	Credentials  Credentials
	ControlPlane *controlplane.ControlPlane
	Agent        *agent.Agent

	log        *slog.Logger
	agentSrv   *http.Server
	bakeCancel context.CancelFunc
	bakeDone   chan struct{}
	cancel     context.CancelFunc
	serveDone  chan error
	closedOnce bool
}

// Start brings the stack up and returns once it serves.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	cfg, log := opts.Config, opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := linkImages(cfg.DataDir, opts.ImagesFrom); err != nil {
		return nil, err
	}
	s := &Stack{log: log, DataDir: cfg.DataDir, serveDone: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.Close(context.WithoutCancel(ctx))
		}
	}()

	// The agent listens on loopback only, behind a per-process token.
	token, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	aopts := opts.AgentOptions
	aopts.DataDir, aopts.Logger, aopts.Token = cfg.DataDir, log, token
	if aopts.HostID == "" {
		aopts.HostID = HostID
	}
	if s.Agent, err = agent.New(ctx, aopts); err != nil {
		return nil, err
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("agent listen: %w", err)
	}
	s.agentSrv = agent.NewHTTPServer(aln.Addr().String(), s.Agent.Handler())
	go s.agentSrv.Serve(aln)
	agentURL := "http://" + aln.Addr().String()
	client := agentclient.NewClient(agentURL, &http.Client{}, agentclient.WithToken(token))

	if s.ControlPlane, err = controlplane.New(ctx, controlplane.Options{
		Config: cfg,
		Hosts:  service.SingleHost{ID: aopts.HostID, Client: client},
		// The guests are reachable from this process: no agent hop.
		SandboxRoute: proxy.DirectRoute(func(id string) (string, string, error) {
			r, err := s.Agent.SandboxRoute(id)
			return r.Addr, r.Pool, err
		}),
		Logger: log,
	}); err != nil {
		return nil, err
	}
	controlplane.RegisterHost(ctx, s.ControlPlane.Store, aopts.HostID, agentURL, client, log)
	if s.Credentials, err = ensureCredentials(ctx, cfg.DataDir, s.ControlPlane); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.URL = s.ControlPlane.URL(ln)
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// Settled before the bake below creates its sandbox (see Settle).
	s.ControlPlane.Settle(serveCtx)
	go func() { s.serveDone <- s.ControlPlane.Serve(serveCtx, ln) }()
	if opts.CodeInterpreter {
		s.startCodeInterpreterBake(ctx)
	}
	return s, nil
}

// Wait blocks until ctx ends or the control plane stops serving.
func (s *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.serveDone:
		s.serveDone <- err
		return err
	}
}

// Close stops serving, then stops the agent (which stops or pauses its
// sandboxes) and closes the store.
func (s *Stack) Close(ctx context.Context) error {
	if s.closedOnce {
		return nil
	}
	s.closedOnce = true
	var errs []error
	if s.bakeCancel != nil {
		s.bakeCancel()
		<-s.bakeDone // it removes its sandbox before the agent stops
	}
	if s.cancel != nil {
		s.cancel()
		errs = append(errs, <-s.serveDone)
	}
	if s.agentSrv != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.agentSrv.Shutdown(sctx); err != nil {
			s.agentSrv.Close() // long streams may hold it open
		}
		cancel()
	}
	if s.Agent != nil {
		errs = append(errs, s.Agent.Shutdown(ctx))
	}
	if s.ControlPlane != nil {
		errs = append(errs, s.ControlPlane.Close())
	}
	return errors.Join(errs...)
}

func linkImages(dataDir, from string) error {
	if from == "" {
		return nil
	}
	dst := filepath.Join(dataDir, "images")
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	src, err := filepath.Abs(filepath.Join(from, "images"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("images in %s: %w (build them with: hearth image build --data-dir %s)", from, err, from)
	}
	return os.Symlink(src, dst)
}

const credentialsFile = "dev-credentials.json"

// ensureCredentials returns the saved developer credentials when the key
// still works, and otherwise creates the account (or just a new key).
func ensureCredentials(ctx context.Context, dataDir string, cp *controlplane.ControlPlane) (Credentials, error) {
	path := filepath.Join(dataDir, credentialsFile)
	var c Credentials
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &c) == nil && c.APIKey != "" {
		if _, err := cp.Store.GetAPIKeyByHash(ctx, auth.HashAPIKey(c.APIKey)); err == nil {
			return c, nil
		}
	}
	svc := cp.Service
	if c.Email == "" {
		pw, err := randomHex(12)
		if err != nil {
			return c, err
		}
		c = Credentials{Email: "dev@hearth.local", Password: pw}
		res, err := svc.Signup(ctx, c.Email, c.Password)
		if err != nil {
			return c, fmt.Errorf("create developer account: %w", err)
		}
		c.TeamID = res.Team.ID
		if err := cp.Store.SetUserAdmin(ctx, c.Email, true); err != nil {
			return c, err
		}
	}
	u, err := cp.Store.GetUserByEmail(ctx, c.Email)
	if err != nil {
		return c, fmt.Errorf("developer account %s: %w (remove %s to start over)", c.Email, err, path)
	}
	_, key, err := svc.CreateAPIKey(ctx, service.Principal{UserID: u.ID, TeamID: c.TeamID, IsAdmin: true}, "dev")
	if err != nil {
		return c, fmt.Errorf("create developer API key: %w", err)
	}
	c.APIKey = key
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return c, err
	}
	return c, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// compile-time check that the dev store is the control plane's Store.
var _ service.Store = (*store.DB)(nil)
