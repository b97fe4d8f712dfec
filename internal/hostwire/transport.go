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

// FullDuplex lets a proxy handler go on reading the client's request body
// after the response has started. Without it, net/http's HTTP/1 server
// drains and closes the unread request body when the handler writes the
// response headers, while the Transport forwarding that body upstream may
// still be reading it: after the last byte it reads once more to see the
// end, and when the upstream answered first (a Connect server stream
// answers as soon as its request message is in) and the Transport's
// goroutine was descheduled on a busy host, that read fails with
// ErrBodyReadAfterClose, on which the Transport closes the upstream
// connection under the response being copied: the client's stream is cut
// mid-way (the E2B SDK reports "terminated").
//
// Proxies call it once the upstream has answered (ModifyResponse): an
// error the proxy answers itself (an unreachable guest) keeps the server's
// default, with which a client still sending its body gets the answer
// rather than a reset connection. HTTP/2 is always full duplex (the call
// then reports ErrNotSupported).
func FullDuplex(w http.ResponseWriter) { _ = http.NewResponseController(w).EnableFullDuplex() }
