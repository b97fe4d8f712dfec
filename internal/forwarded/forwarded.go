// Package forwarded decides whose X-Forwarded-For and X-Forwarded-Proto to
// believe. Behind a reverse proxy every request comes from the proxy's
// address, so rate limits and the loopback-only /metrics would see the
// proxy, not the client; believing the headers from anyone would let any
// client claim to be 127.0.0.1. Only peers in the trusted CIDRs are
// believed; from anyone else the headers are removed, so nothing further
// in (the sandbox proxy forwarding to guests included) sees forged values.
package forwarded

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Trusted is a set of proxy networks.
type Trusted struct {
	nets []netip.Prefix
}

// Parse reads CIDRs ("10.0.0.0/8") or single addresses ("127.0.0.1").
func Parse(cidrs []string) (Trusted, error) {
	var t Trusted
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if p, err := netip.ParsePrefix(c); err == nil {
			t.nets = append(t.nets, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(c)
		if err != nil {
			return Trusted{}, fmt.Errorf("--trusted-proxy %q: not a CIDR (10.0.0.0/8) or an IP address", c)
		}
		t.nets = append(t.nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return t, nil
}

// Empty reports whether no proxy is trusted.
func (t Trusted) Empty() bool { return len(t.nets) == 0 }

func (t Trusted) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Handler rewrites r.RemoteAddr to the client a trusted proxy names (the
// right-most X-Forwarded-For entry that is not itself a trusted proxy) and
// keeps X-Forwarded-Proto only from trusted peers.
func (t Trusted) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, ok := addrOf(r.RemoteAddr)
		if !ok || !t.contains(peer) {
			if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("X-Forwarded-Proto") != "" || r.Header.Get("X-Forwarded-Host") != "" {
				r = r.Clone(r.Context())
				r.Header.Del("X-Forwarded-For")
				r.Header.Del("X-Forwarded-Proto")
				r.Header.Del("X-Forwarded-Host")
			}
			next.ServeHTTP(w, r)
			return
		}
		client := peer
		hops := r.Header.Values("X-Forwarded-For")
		var list []string
		for _, h := range hops {
			list = append(list, strings.Split(h, ",")...)
		}
		for i := len(list) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(list[i]))
			if err != nil {
				break // garbage: stop at the last address we could trust
			}
			client = a
			if !t.contains(a) {
				break
			}
		}
		r = r.Clone(r.Context())
		r.RemoteAddr = net.JoinHostPort(client.String(), "0")
		// Downstream proxies add the client again; the chain has served
		// its purpose here.
		r.Header.Del("X-Forwarded-For")
		if p := strings.ToLower(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto"))); p != "http" && p != "https" {
			r.Header.Del("X-Forwarded-Proto")
		}
		next.ServeHTTP(w, r)
	})
}

// Scheme is the scheme the client used: https on a TLS connection, else a
// (trusted, see Handler) X-Forwarded-Proto, else http.
func Scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		return p
	}
	return "http"
}

func addrOf(hostport string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(hostport)
	return a.Unmap(), err == nil
}
