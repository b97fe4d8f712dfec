package api

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// HostAdmin is the fleet behind /v1/admin/hosts (internal/fleet's
// ControlPlaneSide implements it). Nil in Deps: the routes answer 503, as
// a control plane without registered hosts would.
type HostAdmin interface {
	// CreateHostToken makes a one-time registration token valid for ttl
	// (0: the fleet's default).
	CreateHostToken(ctx context.Context, ttl time.Duration) (token string, expiresAt time.Time, err error)
	CAFingerprint() string
	ListHosts(ctx context.Context) ([]store.Host, error)
	ListSandboxesByHost(ctx context.Context, hostID string) ([]store.Sandbox, error)
	// DrainHost takes a host out of placement (its sandboxes keep running);
	// UndrainHost puts it back. Unknown host: service.NotFound.
	DrainHost(ctx context.Context, hostID string) (store.Host, error)
	UndrainHost(ctx context.Context, hostID string) (store.Host, error)
	// RemoveHost deletes a host and forgets its client; a Conflict while
	// sandboxes still need it.
	RemoveHost(ctx context.Context, hostID string) error
}

// maxTokenTTL bounds registration tokens: a leaked old token should not
// admit a host a month later.
const maxTokenTTL = 7 * 24 * time.Hour

func (s *server) hostAdmin(r *http.Request) (HostAdmin, error) {
	if !principalFrom(r.Context()).IsAdmin {
		return nil, service.PermissionDenied("platform admins only")
	}
	if s.hosts == nil {
		return nil, service.Unavailable("this control plane does not manage a fleet (started with --agent-url)", nil)
	}
	return s.hosts, nil
}

func (s *server) createHostToken(w http.ResponseWriter, r *http.Request) error {
	ha, err := s.hostAdmin(r)
	if err != nil {
		return err
	}
	var in apiwire.NewHostToken
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	ttl := time.Duration(in.TTLS) * time.Second
	if in.TTLS < 0 || ttl > maxTokenTTL {
		return service.InvalidArgument("ttl_s", "must be between 0 (default) and %d", int(maxTokenTTL/time.Second))
	}
	tok, exp, err := ha.CreateHostToken(r.Context(), ttl)
	if err != nil {
		return fmt.Errorf("create host token: %w", err)
	}
	s.log.Info("host registration token created", "by", principalFrom(r.Context()).UserID, "expires_at", exp)
	writeJSON(w, http.StatusCreated, apiwire.HostToken{Token: tok, ExpiresAt: exp.UTC(), CAFingerprint: ha.CAFingerprint()})
	return nil
}

func (s *server) listHosts(w http.ResponseWriter, r *http.Request) error {
	ha, err := s.hostAdmin(r)
	if err != nil {
		return err
	}
	hosts, err := ha.ListHosts(r.Context())
	if err != nil {
		return fmt.Errorf("list hosts: %w", err)
	}
	out := make([]apiwire.Host, 0, len(hosts))
	for _, h := range hosts {
		j, err := hostView(r.Context(), ha, h)
		if err != nil {
			return err
		}
		out = append(out, j)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// hostView is h on the wire, with its store sandboxes counted by status.
func hostView(ctx context.Context, ha HostAdmin, h store.Host) (apiwire.Host, error) {
	sbs, err := ha.ListSandboxesByHost(ctx, h.ID)
	if err != nil {
		return apiwire.Host{}, fmt.Errorf("list sandboxes of host %s: %w", h.ID, err)
	}
	counts := map[string]int{}
	for _, sb := range sbs {
		counts[string(sb.Status)]++
	}
	j := apiwire.Host{
		ID: h.ID, Name: h.Name, Address: h.Address, Status: string(h.Status),
		Capacity:     apiwire.HostResources{VCPUs: h.VCPUs, MemoryMB: h.MemoryMB, DiskMB: h.DiskMB},
		Usage:        apiwire.HostResources{VCPUs: h.UsedVCPUs, MemoryMB: h.UsedMemoryMB, DiskMB: h.UsedDiskMB},
		SandboxCount: h.SandboxCount, Sandboxes: counts, CreatedAt: h.CreatedAt.UTC(),
	}
	if !h.LastHeartbeat.IsZero() {
		t := h.LastHeartbeat.UTC()
		j.LastHeartbeat = &t
	}
	return j, nil
}

func (s *server) drainHost(w http.ResponseWriter, r *http.Request) error {
	return s.setHostPlacement(w, r, true)
}

func (s *server) undrainHost(w http.ResponseWriter, r *http.Request) error {
	return s.setHostPlacement(w, r, false)
}

func (s *server) setHostPlacement(w http.ResponseWriter, r *http.Request, drain bool) error {
	ha, err := s.hostAdmin(r)
	if err != nil {
		return err
	}
	set := ha.UndrainHost
	if drain {
		set = ha.DrainHost
	}
	h, err := set(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s.log.Info("host placement changed", "host", h.ID, "status", h.Status, "by", principalFrom(r.Context()).UserID)
	j, err := hostView(r.Context(), ha, h)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

func (s *server) removeHost(w http.ResponseWriter, r *http.Request) error {
	ha, err := s.hostAdmin(r)
	if err != nil {
		return err
	}
	if err := ha.RemoveHost(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	s.log.Info("host removed", "host", r.PathValue("id"), "by", principalFrom(r.Context()).UserID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
