package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Sandboxes is what StoreResolver reads; *store.DB implements it.
type Sandboxes interface {
	GetSandboxByID(ctx context.Context, id string) (store.Sandbox, error)
	GetHost(ctx context.Context, id string) (store.Host, error)
}

var _ Sandboxes = (*store.DB)(nil)

// RouteFunc turns a running sandbox on host h into the target for port.
type RouteFunc func(ctx context.Context, sb store.Sandbox, h store.Host, port int) (Target, error)

// StoreResolver resolves sandboxes from the control plane's store.
type StoreResolver struct {
	Store Sandboxes
	// Route reaches a running sandbox: AgentRoute (through the host agent)
	// or DirectRoute (straight to the guest, when this process can).
	Route RouteFunc
	// Resume auto-resumes a paused sandbox when, and only when, it was
	// created with auto-resume, and returns it as it is afterwards; nil
	// disables auto-resume. ResumeWith adapts the service.
	Resume func(ctx context.Context, id string) (store.Sandbox, error)
}

var _ Resolver = (*StoreResolver)(nil)

func (s *StoreResolver) Resolve(ctx context.Context, id string, port int) (Target, error) {
	sb, err := s.Store.GetSandboxByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Target{}, ErrNotFound
	}
	if err != nil {
		return Target{}, fmt.Errorf("look up sandbox %s: %w", id, err)
	}
	switch sb.Status {
	case sandbox.StateRunning:
	case sandbox.StatePaused, sandbox.StatePausing:
		return Target{}, ErrPaused
	case sandbox.StateStopping, sandbox.StateStopped:
		return Target{}, ErrNotFound
	default:
		return Target{}, fmt.Errorf("%w: sandbox %s is %s", ErrNotRunning, id, sb.Status)
	}
	var h store.Host
	if sb.Host != "" {
		if h, err = s.Store.GetHost(ctx, sb.Host); err != nil && !errors.Is(err, store.ErrNotFound) {
			return Target{}, fmt.Errorf("look up host %s: %w", sb.Host, err)
		}
		h.ID = sb.Host
	}
	return s.Route(ctx, sb, h, port)
}

func (s *StoreResolver) AutoResume(ctx context.Context, id string) (bool, error) {
	if s.Resume == nil {
		return false, nil
	}
	// The service decides (auto_resume, a pause in flight) atomically; a
	// check here first would only race with it.
	sb, err := s.Resume(ctx, id)
	if err != nil {
		return false, fmt.Errorf("auto-resume sandbox %s: %w", id, err)
	}
	return sb.Status == sandbox.StateRunning, nil
}

// AgentRoute sends traffic through the host agent's path proxy
// (<agent address>/sandboxes/{id}/proxy/{port}/...; the host's Address is
// host:port or a base URL), with the agent's token
// when it requires one (header Hearth-Agent-Token).
func AgentRoute(agentToken string) RouteFunc {
	return func(_ context.Context, sb store.Sandbox, h store.Host, port int) (Target, error) {
		if h.Address == "" {
			return Target{}, fmt.Errorf("sandbox %s: host %q has no agent address", sb.ID, h.ID)
		}
		// Address is host:port or a base URL (http://host:port).
		base := &url.URL{Scheme: "http", Host: h.Address}
		if strings.Contains(h.Address, "://") {
			u, err := url.Parse(h.Address)
			if err != nil {
				return Target{}, fmt.Errorf("host %s agent address: %w", h.ID, err)
			}
			base = u
		}
		u := *base
		u.Path = strings.TrimSuffix(u.Path, "/") + "/sandboxes/" + sb.ID + "/proxy/" + strconv.Itoa(port)
		t := Target{URL: &u}
		if agentToken != "" {
			t.Header = http.Header{"Hearth-Agent-Token": {agentToken}}
		}
		return t, nil
	}
}

// DirectRoute sends traffic straight to the guest at the host-reachable
// address guest returns (e.g. from agent.(*Agent).SandboxRoute in `hearth
// dev`, where the control plane runs on the sandbox's host), through the
// connection pool it names: one per sandbox and network slot, so a resumed
// sandbox (a new namespace) never gets a connection kept from before.
func DirectRoute(guest func(sandboxID string) (addr, pool string, err error)) RouteFunc {
	return func(_ context.Context, sb store.Sandbox, _ store.Host, port int) (Target, error) {
		ip, pool, err := guest(sb.ID)
		if err != nil {
			return Target{}, fmt.Errorf("sandbox %s address: %w", sb.ID, err)
		}
		return Target{URL: &url.URL{Scheme: "http", Host: net.JoinHostPort(ip, strconv.Itoa(port))}, Pool: pool}, nil
	}
}

// AutoResumer is the service call auto-resume needs.
type AutoResumer interface {
	AutoResumeSandbox(ctx context.Context, id string) (store.Sandbox, error)
}

var _ AutoResumer = (*service.Service)(nil)

// ResumeWith adapts the service for StoreResolver.Resume. Traffic to a
// sandbox is not any team's API call: the service's internal auto-resume
// acts on the sandbox's own auto_resume setting, and envd's access token
// guards the traffic itself.
func ResumeWith(svc AutoResumer) func(ctx context.Context, id string) (store.Sandbox, error) {
	return svc.AutoResumeSandbox
}
