package dashboard

import (
	"context"
	"net/http"

	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/inproc"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// ServiceBackend is the TerminalBackend of a control plane: the service
// authenticates the session and finds the team's running sandbox, and envd
// is reached through the sandbox traffic proxy, in-process, exactly as SDK
// traffic is (so it works wherever the sandbox runs: this box or a remote
// host behind its agent).
type ServiceBackend struct {
	Service *service.Service
	// Proxy is the sandbox traffic handler (internal/proxy), routed by the
	// E2b-Sandbox-Id / E2b-Sandbox-Port headers.
	Proxy http.Handler
}

var _ TerminalBackend = ServiceBackend{}

// envdPort is where envd listens in every guest.
const envdPort = "49983"

func (b ServiceBackend) Envd(ctx context.Context, sessionToken, teamID, sandboxID string) (*envdclient.Client, error) {
	p, err := b.Service.AuthenticateToken(ctx, sessionToken, teamID)
	if err != nil {
		return nil, err
	}
	sb, err := b.Service.GetSandbox(ctx, p, sandboxID)
	if err != nil {
		return nil, err
	}
	if sb.Status != sandbox.StateRunning {
		return nil, service.Conflict("sandbox %s is %s, not running", sb.ID, sb.Status)
	}
	hc := &http.Client{Transport: &inproc.Transport{Handler: b.Proxy, Prepare: func(r *http.Request) {
		r.Header.Set("E2b-Sandbox-Id", sb.ID)
		r.Header.Set("E2b-Sandbox-Port", envdPort)
	}}}
	return envdclient.New("http://sandbox", sb.AccessToken, hc), nil
}
