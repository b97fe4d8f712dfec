package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// fleetFlags tune fleet mode (no --agent-url).
type fleetFlags struct {
	heartbeatInterval time.Duration
	reconcileEvery    time.Duration
}

func newServerCmd() *cobra.Command {
	cfg := config.Default()
	ff := fleetFlags{heartbeatInterval: fleet.DefaultHeartbeatInterval, reconcileEvery: 30 * time.Second}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (REST API, store, reaper)",
		Long: `Run the control plane: the /v1 REST API (OpenAPI at /openapi.yaml, a test UI at
/docs), the store (SQLite in the data dir, or PostgreSQL with --database-url)
and the reaper that ends timed-out sandboxes. Secrets that are not configured
are generated into the data dir (0600) on first start.

Hosts. With --agent-url the control plane drives that one agent (plain
HTTP, --agent-token). Without it, it runs a fleet: agents join with a
one-time token (` + "`hearth host add`" + `), calls to them use mutual TLS with
certificates from the control plane's CA (created in <data-dir>/ca on first
start; its fingerprint is logged for --ca-fingerprint), hosts silent for 3
heartbeat intervals are marked unreachable, and a reconciler settles
sandboxes hosts lost. See docs/multihost.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// main's context is cancelled on SIGINT/SIGTERM: graceful stop.
			log := newLogger(cmd, cfg.LogLevel)
			if cfg.AgentURL == "" {
				return runFleetServer(cmd.Context(), cfg, ff, log)
			}
			return runServer(cmd.Context(), cfg, log)
		},
	}
	config.AddServerFlags(cmd.Flags(), &cfg)
	cmd.Flags().DurationVar(&ff.heartbeatInterval, "heartbeat-interval", ff.heartbeatInterval, "fleet: agents' heartbeat interval (start agents with the same); 3 missed mark a host unreachable")
	cmd.Flags().DurationVar(&ff.reconcileEvery, "reconcile-every", ff.reconcileEvery, "fleet: how often the store is compared with every host's sandboxes")
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
	var client *agentclient.Client
	if cfg.AgentURL != "" {
		tok := cfg.AgentToken
		if tok == "" && cfg.AgentTokenFile != "" {
			b, err := config.ReadSecret(cfg.AgentTokenFile, config.AgentTokenBytes)
			if err != nil {
				return fmt.Errorf("--agent-token-file: %w", err)
			}
			tok = hex.EncodeToString(b)
		}
		if tok == "" {
			return errors.New("--agent-url needs the agent's token: --agent-token or --agent-token-file (hearth agent keeps one in <its data dir>/agent-token)")
		}
		client = agentclient.NewClient(cfg.AgentURL, &http.Client{}, agentclient.WithToken(tok))
		hosts = service.SingleHost{ID: cfg.AgentID, Client: client}
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
	log.Info("hearth server listening", "addr", ln.Addr().String(), "url", cp.URL(ln), "data_dir", cfg.DataDir,
		"docs", cp.URL(ln)+"/docs/")
	return cp.Serve(ctx, ln)
}

// runFleetServer runs the control plane of a fleet of registered agents.
func runFleetServer(ctx context.Context, cfg config.Config, ff fleetFlags, log *slog.Logger) error {
	cp, err := controlplane.New(ctx, controlplane.Options{Config: cfg, Logger: log, Fleet: &fleet.Options{
		HeartbeatInterval: ff.heartbeatInterval, ReconcileInterval: ff.reconcileEvery,
	}})
	if err != nil {
		return err
	}
	defer cp.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	log.Info("hearth server listening (fleet mode)", "addr", ln.Addr().String(), "url", cp.URL(ln), "data_dir", cfg.DataDir,
		"ca_fingerprint", cp.Fleet.CAFingerprint(), "add_host", "hearth host add")
	return cp.Serve(ctx, ln)
}
