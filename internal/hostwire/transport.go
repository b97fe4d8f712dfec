package hostwire

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// SandboxTransports keeps one connection pool per sandbox. Guest addresses
// are recycled (a new sandbox may get a destroyed one's network slot, and
// every guest of a host may even share one address behind the agent), so a
// pool keyed by address would hand a new sandbox's request to a dead VM's
// kept-alive connection. Keyed by sandbox ID, that cannot happen. The
// control plane's proxy and the agent's sandbox-traffic endpoint both use
// it.
type SandboxTransports struct {
	mu        sync.Mutex
	pools     map[string]*pool
	lastSweep time.Time
}

type pool struct {
	t    *http.Transport
	used time.Time
}

// poolIdle is how long an unused pool is kept before its idle connections
// are closed and it is forgotten.
const poolIdle = 2 * time.Minute

// NewSandboxTransports returns an empty set of pools.
func NewSandboxTransports() *SandboxTransports {
	return &SandboxTransports{pools: map[string]*pool{}, lastSweep: time.Now()}
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil, // sandbox traffic never goes through the host's HTTP proxy
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     poolIdle,
		// Bodies pass through as the guest encoded them.
		DisableCompression: true,
	}
}

// Get returns the pool of sandbox id (pools unused for a while are closed
// and forgotten on the way).
func (s *SandboxTransports) Get(id string) *http.Transport {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastSweep) > poolIdle {
		for k, p := range s.pools {
			if now.Sub(p.used) > poolIdle {
				p.t.CloseIdleConnections()
				delete(s.pools, k)
			}
		}
		s.lastSweep = now
	}
	p, ok := s.pools[id]
	if !ok {
		p = &pool{t: newTransport()}
		s.pools[id] = p
	}
	p.used = now
	return p.t
}

// Reset drops a sandbox's idle connections (after an upstream failure, so
// the next request dials afresh).
func (s *SandboxTransports) Reset(id string) {
	s.mu.Lock()
	p, ok := s.pools[id]
	s.mu.Unlock()
	if ok {
		p.t.CloseIdleConnections()
	}
}
