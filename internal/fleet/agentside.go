package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/hostreg"
	"github.com/hearth-sandbox/hearth/internal/pki"
)

// AgentOptions configure JoinAgent.
type AgentOptions struct {
	// IdentityDir keeps the agent's key, certificate and CA bundle (the
	// agent uses <data-dir>/identity).
	IdentityDir     string
	ControlPlaneURL string // e.g. http://10.0.0.1:8080
	// RegisterToken is used only when IdentityDir holds no identity yet;
	// an agent that is already registered ignores it.
	RegisterToken string
	// CAFingerprint pins the control plane's CA at registration
	// ("sha256:<hex>", printed by `hearth server`); strongly advised when
	// ControlPlaneURL is plain HTTP.
	CAFingerprint string
	Name          string // shown to operators; default: Address
	// Address is host:port of the agent's RPC listener as the control plane
	// dials it (recorded at registration).
	Address  string
	Capacity hostreg.Capacity // optional: placement may use the host before its first heartbeat
	// HeartbeatInterval: default DefaultHeartbeatInterval; keep it equal
	// to the control plane's.
	HeartbeatInterval time.Duration
	HTTP              *http.Client // for calls to the control plane; nil: default
	Logger            *slog.Logger
}

// AgentSide is the agent's half of the fleet.
type AgentSide struct {
	opts   AgentOptions
	id     *pki.Identity
	keeper *pki.Keeper
	client *hostreg.Client
	log    *slog.Logger
}

// ErrNotRegistered: the agent has no identity and no token to get one.
var ErrNotRegistered = errors.New("agent is not registered with a control plane: pass --register TOKEN (from `hearth host add`)")

// JoinAgent loads the agent's identity, registering first when there is
// none and a token is given. It does not start anything (Run does).
func JoinAgent(ctx context.Context, o AgentOptions) (*AgentSide, error) {
	if o.IdentityDir == "" || o.ControlPlaneURL == "" {
		return nil, errors.New("fleet: IdentityDir and ControlPlaneURL are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Name == "" {
		o.Name = o.Address
	}
	id, err := pki.LoadIdentity(o.IdentityDir)
	switch {
	case err == nil:
		if o.RegisterToken != "" {
			o.Logger.Info("already registered; ignoring the registration token", "host_id", id.HostID, "identity", o.IdentityDir)
		}
	case errors.Is(err, fs.ErrNotExist) && o.RegisterToken != "":
		if o.Address == "" {
			return nil, errors.New("fleet: registration needs the agent's address (--address HOST:PORT)")
		}
		reg := &hostreg.Registrar{DataDir: o.IdentityDir, HTTP: o.HTTP, CAFingerprint: o.CAFingerprint}
		if id, err = reg.Register(ctx, o.ControlPlaneURL, o.RegisterToken, o.Name, o.Address, o.Capacity); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		o.Logger.Info("registered with the control plane", "host_id", id.HostID, "control_plane", o.ControlPlaneURL)
	case errors.Is(err, fs.ErrNotExist):
		return nil, ErrNotRegistered
	default:
		return nil, fmt.Errorf("fleet: agent identity: %w", err)
	}
	if time.Now().After(id.Cert.Leaf.NotAfter) {
		// Renewal needs a valid certificate: the operator must re-register.
		return nil, fmt.Errorf("fleet: the agent certificate expired on %s: delete %s and register again with a new token",
			id.Cert.Leaf.NotAfter.Format(time.RFC3339), o.IdentityDir)
	}
	keeper := pki.NewKeeper(id.Cert)
	return &AgentSide{
		opts: o, id: id, keeper: keeper, log: o.Logger,
		client: hostreg.NewClient(o.ControlPlaneURL, o.HTTP, keeper, o.IdentityDir),
	}, nil
}

// HostID is the ID the control plane gave this agent.
func (a *AgentSide) HostID() string { return a.id.HostID }

// TLSConfig is the RPC listener's: the agent's (rotating) certificate,
// and only the control plane's certificate from the fleet's CA is let in.
// Callers add NextProtos (h2, http/1.1) as their server needs.
func (a *AgentSide) TLSConfig() *tls.Config {
	tc := pki.AgentServerTLS(a.keeper, a.id.Pool)
	tc.NextProtos = []string{"h2", "http/1.1"}
	return tc
}

// Run sends heartbeats (report gathers them) and renews the certificate
// until ctx ends. It never touches sandboxes: an agent cut off from the
// control plane keeps serving them and keeps retrying.
func (a *AgentSide) Run(ctx context.Context, report func(context.Context) (hostreg.Heartbeat, error)) {
	var wg sync.WaitGroup
	wg.Go(func() { a.keeper.RotateLoop(ctx, time.Hour, a.client.Renew, a.log) })
	wg.Go(func() {
		(&hostreg.Heartbeater{Sender: a.client, Report: report, Interval: a.opts.HeartbeatInterval, Logger: a.log}).Run(ctx)
	})
	wg.Wait()
}

// Report turns an agent's HostInfo into heartbeats.
func Report(info func() (agent.HostInfo, error)) func(context.Context) (hostreg.Heartbeat, error) {
	return func(context.Context) (hostreg.Heartbeat, error) {
		hi, err := info()
		if err != nil {
			return hostreg.Heartbeat{}, err
		}
		return hostreg.Heartbeat{
			Capacity:     hostreg.Capacity{VCPUs: hi.VCPUs, MemoryMB: int(hi.MemoryMB), DiskMB: int(hi.DiskMB)},
			UsedVCPUs:    hi.UsedVCPUs,
			UsedMemoryMB: int(hi.UsedMemoryMB),
			UsedDiskMB:   int(hi.UsedDiskMB),
			SandboxCount: hi.SandboxCount,
		}, nil
	}
}
