package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/service"
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

func runServer(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	var hosts service.HostPool
	var client *agent.Client
	if cfg.AgentURL != "" {
		var opts []agent.ClientOption
		if cfg.AgentToken != "" {
			opts = append(opts, agent.WithToken(cfg.AgentToken))
		}
		client = agent.NewClient(cfg.AgentURL, &http.Client{}, opts...)
		hosts = service.SingleHost{ID: cfg.AgentID, Client: client}
	} else {
		log.Warn("no host agent configured (--agent-url): sandbox creation will answer 503 \"no hosts available\"")
	}
	cp, err := controlplane.New(ctx, controlplane.Options{Config: cfg, Hosts: hosts, Logger: log})
	if err != nil {
		return err
	}
	defer cp.Close()
	if client != nil {
		controlplane.RegisterHost(ctx, cp.Store, cfg.AgentID, cfg.AgentURL, client, log)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	log.Info("hearth server listening", "addr", "http://"+ln.Addr().String(), "data_dir", cfg.DataDir,
		"docs", "http://"+ln.Addr().String()+"/docs/")
	return cp.Serve(ctx, ln)
}
