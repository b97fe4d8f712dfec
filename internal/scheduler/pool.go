package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// HostStore is what Pool reads; *store.DB implements it.
type HostStore interface {
	ListHosts(ctx context.Context) ([]store.Host, error)
	GetHost(ctx context.Context, id string) (store.Host, error)
}

// ClientFactory makes the RPC client of a host (e.g. agentclient.NewClient over
// an http.Client whose transport uses pki.ControlPlaneClientTLS for
// host.ID). Pool calls it once per host and address.
type ClientFactory func(host store.Host) (service.HostClient, error)

// Pool is a service.HostPool over the registered hosts.
//
// Usage numbers in host rows are as fresh as the last heartbeat, so a burst
// of creations would all see the same least-loaded host. Pool therefore
// adds its own recent picks to a host's usage until a heartbeat newer than
// the pick arrives (or ReservationTTL passes). With several control
// planes, each only knows its own picks; heartbeats reconcile them.
type Pool struct {
	st      HostStore
	factory ClientFactory
	policy  Policy
	// ReservationTTL bounds how long a pick counts without a heartbeat
	// confirming it. Default 1 minute.
	ReservationTTL time.Duration
	now            func() time.Time

	mu       sync.Mutex
	clients  map[string]cachedClient
	reserved map[string][]reservation
}

type cachedClient struct {
	address string
	c       service.HostClient
}

type reservation struct {
	at                   time.Time
	vcpus, memMB, diskMB int
}

var _ service.HostPool = (*Pool)(nil)

// NewPool places with policy over st's hosts, dialling them through factory.
func NewPool(st HostStore, factory ClientFactory, policy Policy) *Pool {
	return &Pool{st: st, factory: factory, policy: policy, ReservationTTL: time.Minute, now: time.Now,
		clients: map[string]cachedClient{}, reserved: map[string][]reservation{}}
}

// Pick implements service.HostPool. No host: a KindUnavailable error. A
// host that lacks the template (none of req.TemplateHosts could take the
// sandbox) is returned all the same: the service copies the template there
// from a holder first.
func (p *Pool) Pick(ctx context.Context, req service.PlacementRequest) (string, service.HostClient, error) {
	hosts, err := p.st.ListHosts(ctx)
	if err != nil {
		return "", nil, service.Unavailable("cannot list hosts", err)
	}
	if req.Host != "" {
		// Pinned (the sandbox's volumes live there): that host or none.
		hosts = slices.DeleteFunc(hosts, func(h store.Host) bool { return h.ID != req.Host })
		if len(hosts) == 0 {
			return "", nil, service.Unavailable("host "+req.Host+", which holds the sandbox's volumes, is not registered", nil)
		}
	}
	r := Request{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskSizeMB, TemplateID: req.TemplateID, TemplateHosts: req.TemplateHosts}

	p.mu.Lock()
	now := p.now()
	cands := make([]Candidate, len(hosts))
	byID := make(map[string]store.Host, len(hosts))
	for i, h := range hosts {
		cands[i] = p.withReservations(FromHost(h), h.LastHeartbeat, now)
		byID[h.ID] = h
	}
	d, err := Place(cands, r, p.policy)
	if err == nil {
		p.reserved[d.HostID] = append(p.reserved[d.HostID], reservation{at: now, vcpus: r.VCPUs, memMB: r.MemoryMB, diskMB: r.DiskMB})
	}
	p.mu.Unlock()

	if err != nil {
		return "", nil, service.Unavailable("no host can take the sandbox", err)
	}
	c, err := p.client(byID[d.HostID])
	if err != nil {
		return "", nil, err
	}
	return d.HostID, c, nil
}

// withReservations adds the picks not yet covered by a heartbeat, dropping
// the covered and expired ones. p.mu held.
func (p *Pool) withReservations(c Candidate, lastHeartbeat, now time.Time) Candidate {
	rs := p.reserved[c.ID]
	kept := rs[:0]
	for _, r := range rs {
		if r.at.After(lastHeartbeat) && now.Sub(r.at) < p.ReservationTTL {
			kept = append(kept, r)
			c.UsedVCPUs += r.vcpus
			c.UsedMemoryMB += r.memMB
			c.UsedDiskMB += r.diskMB
			c.SandboxCount++
		}
	}
	if len(kept) == 0 {
		delete(p.reserved, c.ID)
	} else {
		p.reserved[c.ID] = kept
	}
	return c
}

// Get implements service.HostPool: the client of a ready or draining host.
// Unknown and unreachable hosts are KindUnavailable without dialling.
func (p *Pool) Get(ctx context.Context, hostID string) (service.HostClient, error) {
	h, err := p.st.GetHost(ctx, hostID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, service.Unavailable("host "+hostID+" is not available", nil)
	}
	if err != nil {
		return nil, service.Unavailable("cannot read host "+hostID, err)
	}
	if h.Status == store.HostUnreachable {
		return nil, service.Unavailable("host "+hostID+" is unreachable", nil)
	}
	return p.client(h)
}

// Forget drops the cached client of hostID (after deleting the host).
func (p *Pool) Forget(hostID string) {
	p.mu.Lock()
	delete(p.clients, hostID)
	delete(p.reserved, hostID)
	p.mu.Unlock()
}

func (p *Pool) client(h store.Host) (service.HostClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.clients[h.ID]; ok && cc.address == h.Address {
		return cc.c, nil
	}
	c, err := p.factory(h)
	if err != nil {
		return nil, service.Unavailable("cannot connect to host "+h.ID, fmt.Errorf("client for %s: %w", h.Address, err))
	}
	p.clients[h.ID] = cachedClient{address: h.Address, c: c}
	return c, nil
}
