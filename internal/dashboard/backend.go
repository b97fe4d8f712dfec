package dashboard

import (
	"context"
	"net/http"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// ServiceBackend is the TerminalBackend of a control plane that can reach
// its hosts' envd addresses (one box, or hosts on a routed network): the
// service authenticates the session and finds the team's sandbox, the host
// pool's client reports the sandbox's envd address.
type ServiceBackend struct {
	Service *service.Service
	Hosts   service.HostPool
	// HTTPClient talks to envd; nil: a client without timeouts (terminal
	// streams are long-lived).
	HTTPClient *http.Client
}

var _ TerminalBackend = ServiceBackend{}

func (b ServiceBackend) Envd(ctx context.Context, sessionToken, teamID, sandboxID string) (*envdclient.Client, error) {
	p, err := b.Service.AuthenticateToken(ctx, sessionToken, teamID)
	if err != nil {
		return nil, err
	}
	sb, err := b.Service.GetSandbox(ctx, p, sandboxID)
	if err != nil {
		return nil, err
	}
	if sb.Status != store.StatusRunning {
		return nil, service.Conflict("sandbox %s is %s, not running", sb.ID, sb.Status)
	}
	hc, err := b.Hosts.Get(ctx, sb.Host)
	if err != nil {
		return nil, err
	}
	rts, err := hc.ListSandboxes(ctx)
	if err != nil {
		return nil, service.Unavailable("the sandbox's host does not answer", err)
	}
	for _, rt := range rts {
		if rt.SandboxID != sb.ID {
			continue
		}
		if rt.Address == "" {
			return nil, service.Unavailable("the host reports no envd address for the sandbox", nil)
		}
		base := rt.Address
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		return envdclient.New(base, sb.AccessToken, b.HTTPClient), nil
	}
	return nil, service.Unavailable("the sandbox is not running on its host", nil)
}
