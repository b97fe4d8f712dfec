package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/config"
)

type agentFlags struct {
	dataDir       string
	listen        string
	token         string
	hostID        string
	vmm           string
	rootfsBackend string
	bootTimeout   time.Duration
	logLevel      string
}

func newAgentCmd() *cobra.Command {
	f := agentFlags{
		dataDir:     config.DefaultDataDir(),
		listen:      "127.0.0.1:7070",
		bootTimeout: 90 * time.Second,
		logLevel:    "info",
	}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent (runs this host's sandboxes as microVMs)",
		Long: `Run the host agent: the Connect RPC service the control plane drives
(hostagent.v1.HostAgentService) and the entry point for sandbox traffic
(/sandboxes/{id}/proxy/{port}/... or the E2b-Sandbox-Id/-Port headers).

At start-up it removes network slots, loop devices and VMs a crashed agent
left behind, grows base images to the default disk size (20 GiB, sparse)
and picks a VMM by probing (Firecracker, QEMU/KVM, QEMU/TCG). On SIGINT or
SIGTERM it stops its sandboxes before exiting.

The agent must be reachable by the control plane only: set --agent-token
(the same HEARTH_AGENT_TOKEN as the server's) unless it listens on loopback.
It needs root (network namespaces, tap devices, loop devices).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, f, newLogger(cmd, f.logLevel))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", f.dataDir, "directory with images/ and the sandboxes' files")
	fs.StringVar(&f.listen, "listen", f.listen, "host:port of the RPC and sandbox-traffic endpoint")
	fs.StringVar(&f.token, "agent-token", f.token, "token the control plane must send (Hearth-Agent-Token header); empty: none")
	fs.StringVar(&f.hostID, "host-id", f.hostID, "this host's ID as the control plane knows it (default: host name)")
	fs.StringVar(&f.vmm, "vmm", f.vmm, "restrict the VMM: firecracker, qemu-kvm, qemu-tcg or qemu (default: probe)")
	fs.StringVar(&f.rootfsBackend, "rootfs-backend", f.rootfsBackend, "root-disk backend: devicemapper, reflink, qcow2 or copy (default: probe)")
	fs.DurationVar(&f.bootTimeout, "boot-timeout", f.bootTimeout, "how long a sandbox may take to answer after its VM starts")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "debug, info, warn or error")
	config.BindCommand(cmd)
	return cmd
}

func runAgent(ctx context.Context, f agentFlags, log *slog.Logger) error {
	if f.token == "" && !isLoopback(f.listen) {
		log.Warn("agent: listening beyond loopback without --agent-token: anyone who can reach it controls the sandboxes", "listen", f.listen)
	}
	a, err := agent.New(ctx, agent.Options{
		DataDir:       f.dataDir,
		HostID:        f.hostID,
		Token:         f.token,
		VMM:           f.vmm,
		RootfsBackend: f.rootfsBackend,
		BootTimeout:   f.bootTimeout,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	srv := agent.NewHTTPServer(f.listen, a.Handler())
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return errors.Join(fmt.Errorf("agent: listen: %w", err), a.Close())
	}
	log.Info("agent listening", "addr", ln.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	// Stop taking requests first, then stop the sandboxes.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		_ = srv.Close() // streams (exec, proxied connections) may hold it open
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, a.Shutdown(sctx))
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
