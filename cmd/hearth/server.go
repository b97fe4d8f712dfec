package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/api"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func newServerCmd() *cobra.Command {
	cfg := config.Default()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (REST API, store, reaper)",
		Long: `Run the control plane: the /v1 REST API (OpenAPI at /openapi.yaml, a test UI at
/docs), the store (SQLite in the data dir, or PostgreSQL with --database-url)
and the reaper that ends timed-out sandboxes. Secrets that are not configured
are generated into the data dir (0600) on first start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// main's context is cancelled on SIGINT/SIGTERM: graceful stop.
			return runServer(cmd.Context(), cfg, newLogger(cmd, cfg.LogLevel))
		},
	}
	config.AddServerFlags(cmd.Flags(), &cfg)
	config.BindCommand(cmd)
	return cmd
}

func newLogger(cmd *cobra.Command, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
}

// openStore opens the configured store, generating the sealing key into
// the data dir when none is configured.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*store.DB, error) {
	var sealKey []byte
	var err error
	if cfg.SealKey != "" {
		sealKey, err = config.DecodeKey("--seal-key", cfg.SealKey, 32)
	} else {
		sealKey, err = config.EnsureSecret(cfg.DataDir, "seal.key", 32)
	}
	if err != nil {
		return nil, err
	}
	sealer, err := store.NewAESSealer(sealKey)
	if err != nil {
		return nil, err
	}
	opts := store.Options{DSN: cfg.DatabaseURL, Sealer: sealer, Logger: log}
	if opts.DSN == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		opts.DSN = filepath.Join(cfg.DataDir, "hearth.db")
	}
	db, err := store.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	log.Info("store open", "driver", db.Driver(), "dsn", redactDSN(opts.DSN))
	return db, nil
}

// redactDSN hides a password in a postgres URL for logs.
func redactDSN(dsn string) string {
	if !store.IsPostgresURL(dsn) {
		return dsn
	}
	if at := strings.LastIndex(dsn, "@"); at > 0 {
		if colon := strings.Index(dsn[strings.Index(dsn, "//")+2:at], ":"); colon >= 0 {
			start := strings.Index(dsn, "//") + 2 + colon + 1
			return dsn[:start] + "xxxxx" + dsn[at:]
		}
	}
	return dsn
}

func runServer(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	db, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()

	jwtKey := []byte(cfg.JWTSecret)
	if cfg.JWTSecret == "" {
		if jwtKey, err = config.EnsureSecret(cfg.DataDir, "jwt.key", 32); err != nil {
			return err
		}
	} else if len(jwtKey) < 32 {
		return errors.New("--jwt-secret / HEARTH_JWT_SECRET must be at least 32 bytes")
	}
	tokens, err := auth.NewTokens(jwtKey, "hearth", cfg.JWTTTL, nil)
	if err != nil {
		return err
	}
	passwords, err := auth.NewPasswords(0)
	if err != nil {
		return err
	}

	var hosts service.HostPool = service.SingleHost{}
	if cfg.AgentURL != "" {
		var opts []agent.ClientOption
		if cfg.AgentToken != "" {
			opts = append(opts, agent.WithToken(cfg.AgentToken))
		}
		client := agent.NewClient(cfg.AgentURL, &http.Client{}, opts...)
		hosts = service.SingleHost{ID: cfg.AgentID, Client: client}
		registerHost(ctx, db, client, cfg, log)
	} else {
		log.Warn("no host agent configured (--agent-url): sandbox creation will answer 503 \"no hosts available\"")
	}
	if err := ensurePlatformTemplates(ctx, db); err != nil {
		return err
	}

	svc, err := service.New(service.Deps{Store: db, Hosts: hosts, Passwords: passwords, Tokens: tokens, Logger: log})
	if err != nil {
		return err
	}
	handler := api.New(api.Deps{Service: svc, Logger: log, MaxUploadBytes: cfg.MaxUploadMB << 20})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}

	reapCtx, stopReaper := context.WithCancel(ctx)
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		svc.NewReaper(cfg.ReapEvery).Run(reapCtx)
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("hearth server listening", "addr", "http://"+ln.Addr().String(), "data_dir", cfg.DataDir,
		"docs", "http://"+ln.Addr().String()+"/docs/")

	select {
	case err = <-serveErr:
	case <-ctx.Done():
		log.Info("shutting down")
		shCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = srv.Shutdown(shCtx)
		cancel()
	}
	stopReaper()
	<-reaperDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// registerHost records the configured agent in the hosts table (for
// operators and later multi-host placement). An unreachable agent is not
// fatal: it may start after the control plane.
func registerHost(ctx context.Context, db *store.DB, c service.HostClient, cfg config.Config, log *slog.Logger) {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	h := store.Host{ID: cfg.AgentID, Name: cfg.AgentID, Address: cfg.AgentURL, Status: store.HostUnreachable}
	if info, err := c.Ping(pctx); err != nil {
		log.Warn("host agent not reachable yet", "url", cfg.AgentURL, "err", err)
	} else {
		h.Status, h.VCPUs, h.MemoryMB, h.DiskMB, h.SandboxCount = store.HostReady, info.VCPUs, info.MemoryMB, info.DiskMB, info.SandboxCount
		h.LastHeartbeat = time.Now()
		log.Info("host agent reachable", "url", cfg.AgentURL, "driver", info.Driver, "vcpus", info.VCPUs, "memory_mb", info.MemoryMB)
	}
	if _, err := db.UpsertHost(ctx, h); err != nil {
		log.Warn("record host", "err", err)
	}
}

// ensurePlatformTemplates creates the platform "base" template (ID = image
// name on the hosts) when it is missing; an existing one is left as is.
func ensurePlatformTemplates(ctx context.Context, db *store.DB) error {
	_, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, "base")
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("look up platform templates: %w", err)
	}
	_, err = db.UpsertPlatformTemplate(ctx, store.Template{ID: "base", Name: "base", Kind: store.KindBase, VCPUs: 2, MemoryMB: 512, DiskSizeMB: store.DefaultDiskSizeMB})
	if err != nil {
		return fmt.Errorf("create platform template base: %w", err)
	}
	return nil
}
