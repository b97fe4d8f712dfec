package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/fleet"
)

type agentFlags struct {
	dataDir       string
	listen        string
	token         string
	hostID        string
	vmm           string
	firecracker   agent.FirecrackerJail
	rootfsBackend string
	bootTimeout   time.Duration
	buildCacheMB  int64
	logLevel      string
	netnsPrefix   string
	egressPrivate []string

	// Fleet mode (set by --control-plane).
	controlPlane      string
	register          string
	registerFile      string
	address           string
	name              string
	caFingerprint     string
	heartbeatInterval time.Duration
	crashAt           string
}

func newAgentCmd() *cobra.Command {
	f := agentFlags{
		dataDir:           config.DefaultDataDir(),
		listen:            "127.0.0.1:7070",
		bootTimeout:       90 * time.Second,
		logLevel:          "info",
		heartbeatInterval: fleet.DefaultHeartbeatInterval,
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

Every request must carry a token: --agent-token (the same HEARTH_AGENT_TOKEN
as the server's), or else the one the agent keeps in <data-dir>/agent-token
(created 0600 on first start; hearth server --agent-token-file reads it).
It needs root (network namespaces, tap devices, loop devices).

Two ways to be reached:

  - single host (hearth dev, hearth server --agent-url): plain HTTP, the
    control plane sends the agent token;
  - fleet (--control-plane URL): the agent registers once with a one-time
    token from ` + "`hearth host add`" + ` (--register TOKEN; its key never leaves
    <data-dir>/identity, it sends a CSR), then serves mutual TLS (only the
    control plane's certificate is let in), heartbeats every
    --heartbeat-interval and renews its certificate before expiry:

      hearth agent --control-plane http://CP:8080 --register hrt_... \
        --ca-fingerprint sha256:... --listen 0.0.0.0:7070 --address 10.0.0.5:7070

Several agents on one machine (tests) need distinct --data-dir: the network
object prefix and address pool are derived from it (or set --netns-prefix);
start-up cleanup removes every network object with the prefix.`,
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
	fs.StringVar(&f.token, "agent-token", f.token, "token the control plane must send (Hearth-Agent-Token header); empty: the one in <data-dir>/agent-token, created if missing")
	fs.StringVar(&f.hostID, "host-id", f.hostID, "this host's ID as the control plane knows it (default: host name)")
	fs.StringVar(&f.vmm, "vmm", f.vmm, "restrict the VMM: firecracker, qemu-kvm, qemu-tcg or qemu (default: probe)")
	fs.StringVar(&f.rootfsBackend, "rootfs-backend", f.rootfsBackend, "root-disk backend: devicemapper, reflink, qcow2 or copy (default: probe)")
	fs.DurationVar(&f.bootTimeout, "boot-timeout", f.bootTimeout, "how long a sandbox may take to answer after its VM starts")
	fs.Int64Var(&f.buildCacheMB, "build-cache-mb", agent.DefaultBuildCacheBytes>>20, "disk space the template build step cache may take (MiB); least recently used steps go first")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "debug, info, warn or error")
	fs.StringVar(&f.netnsPrefix, "netns-prefix", f.netnsPrefix, "prefix of this agent's network namespaces, veths and iptables chains (default: derived from --data-dir; at most 8 of [a-z0-9-])")
	addEgressFlag(fs, &f.egressPrivate)
	addFirecrackerFlags(fs, &f.firecracker)
	fs.StringVar(&f.controlPlane, "control-plane", f.controlPlane, "control plane URL: join its fleet (mTLS, heartbeats) instead of single-host mode")
	fs.StringVar(&f.register, "register", f.register, "one-time registration token from `hearth host add` (first start only)")
	fs.StringVar(&f.registerFile, "register-file", f.registerFile, "file holding the --register token (e.g. a Kubernetes Secret key named after the node); a missing file is ignored")
	fs.StringVar(&f.address, "address", f.address, "host:port the control plane dials this agent at (default: --listen)")
	fs.StringVar(&f.name, "name", f.name, "host name shown to operators (default: --address)")
	fs.StringVar(&f.caFingerprint, "ca-fingerprint", f.caFingerprint, "pin of the control plane's CA (sha256:..., printed by hearth server); checked at registration")
	fs.DurationVar(&f.heartbeatInterval, "heartbeat-interval", f.heartbeatInterval, "time between heartbeats (keep equal to the server's)")
	addCrashAtFlag(fs, &f.crashAt)
	config.BindCommand(cmd)
	return cmd
}

func runAgent(ctx context.Context, f agentFlags, log *slog.Logger) error {
	var err error
	if f.register, err = registerToken(f.register, f.registerFile); err != nil {
		return err
	}
	var side *fleet.AgentSide
	if f.controlPlane != "" {
		if f.address == "" {
			f.address = f.listen
		}
		side, err = fleet.JoinAgent(ctx, fleet.AgentOptions{
			IdentityDir:       filepath.Join(f.dataDir, "identity"),
			ControlPlaneURL:   f.controlPlane,
			RegisterToken:     f.register,
			CAFingerprint:     f.caFingerprint,
			Name:              f.name,
			Address:           f.address,
			HeartbeatInterval: f.heartbeatInterval,
			Logger:            log,
		})
		if err != nil {
			return err
		}
		f.hostID = side.HostID()
	} else if f.register != "" {
		return errors.New("--register needs --control-plane URL")
	} else if f.token == "" {
		// Never unauthenticated: any local user could drive every sandbox.
		path := filepath.Join(f.dataDir, config.AgentTokenFile)
		tok, err := config.EnsureSecret(f.dataDir, config.AgentTokenFile, config.AgentTokenBytes)
		if err != nil {
			return fmt.Errorf("agent token: %w", err)
		}
		f.token = hex.EncodeToString(tok)
		log.Info("agent: requests must carry the token in "+path+" (hearth server --agent-token-file "+path+")", "listen", f.listen)
	}
	open, err := egress.ParseOperatorRanges(f.egressPrivate)
	if err != nil {
		return err
	}
	opts := agent.Options{
		EgressAllowPrivate: open,
		DataDir:            f.dataDir,
		HostID:             f.hostID,
		Token:              f.token,
		VMM:                f.vmm,
		Firecracker:        f.firecracker,
		RootfsBackend:      f.rootfsBackend,
		BootTimeout:        f.bootTimeout,
		BuildCacheBytes:    f.buildCacheMB << 20,
		NetnsPrefix:        f.netnsPrefix,
		CrashAt:            f.crashAt,
		Logger:             log,
	}
	a, err := agent.New(ctx, opts)
	if err != nil {
		return err
	}
	srv := agent.NewHTTPServer(f.listen, a.Handler())
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return errors.Join(fmt.Errorf("agent: listen: %w", err), a.Close())
	}
	serveErr := make(chan error, 1)
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	if side != nil {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		srv.Protocols = &p
		srv.TLSConfig = side.TLSConfig()
		log.Info("agent listening (mTLS, fleet)", "addr", ln.Addr().String(), "host_id", side.HostID(), "control_plane", f.controlPlane)
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
		go side.Run(loopCtx, fleet.Report(a.HostInfo))
	} else {
		log.Info("agent listening", "addr", ln.Addr().String())
		go func() { serveErr <- srv.Serve(ln) }()
	}
	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	stopLoops()
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

// addCrashAtFlag adds the hidden --crash-at flag (HEARTH_CRASH_AT): the
// agent kills itself with SIGKILL at that lifecycle step, so crash tests
// can leave every operation half done (see agent.CrashSteps).
func addCrashAtFlag(fs *pflag.FlagSet, p *string) {
	fs.Var(&crashStep{p: p}, "crash-at", "crash tests only: SIGKILL this process at the named lifecycle step")
	_ = fs.MarkHidden("crash-at")
}

type crashStep struct{ p *string }

func (c *crashStep) String() string { return *c.p }
func (c *crashStep) Type() string   { return "step" }
func (c *crashStep) Set(v string) error {
	if v != "" && !slices.Contains(agent.CrashSteps(), v) {
		return fmt.Errorf("unknown step %q (one of: %s)", v, strings.Join(agent.CrashSteps(), ", "))
	}
	*c.p = v
	return nil
}

// registerToken is --register, else the content of --register-file. A
// missing file is no error: a DaemonSet mounts one Secret with a token per
// node, and nodes that already joined have none (nor need one).
func registerToken(token, file string) (string, error) {
	if token != "" || file == "" {
		return token, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("--register-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
