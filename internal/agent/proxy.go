package agent

import (
	"errors"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
)

// headerRouted sends requests carrying the routing headers to proxy and
// everything else to next.
func headerRouted(proxy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(hostwire.HeaderSandboxID) != "" {
			proxy.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// pathProxy serves /sandboxes/{id}/proxy/{port}/{rest}: the prefix is
// stripped and the request goes to /{rest} on the guest port.
func (a *Agent) pathProxy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, port := r.PathValue("id"), r.PathValue("port")
		prefix := "/sandboxes/" + id + "/proxy/" + port
		rest := strings.TrimPrefix(r.URL.Path, prefix)
		a.proxyTo(w, r, id, port, rest)
	})
}

// headerProxy routes by E2b-Sandbox-Id / E2b-Sandbox-Port, keeping the path.
func (a *Agent) headerProxy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.proxyTo(w, r, r.Header.Get(hostwire.HeaderSandboxID), r.Header.Get(hostwire.HeaderSandboxPort), r.URL.Path)
	})
}

func (a *Agent) proxyTo(w http.ResponseWriter, r *http.Request, id, port, path string) {
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		http.Error(w, "invalid sandbox port", http.StatusBadRequest)
		return
	}
	route, err := a.mgr.SandboxRoute(id)
	var te *sbx.ErrTransition
	switch {
	case errors.Is(err, ErrNotFound):
		http.Error(w, "sandbox not found", http.StatusNotFound)
		return
	case errors.As(err, &te):
		http.Error(w, "sandbox is "+string(te.From), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(route.Addr, port)}
	pool := a.pools.Get(route.Pool)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = path, ""
			if pr.Out.URL.Path == "" {
				pr.Out.URL.Path = "/"
			}
			pr.Out.Host = pr.In.Host                // guests may route on Host (e.g. dev servers)
			pr.Out.Header.Del(hostwire.TokenHeader) // the agent's own token stays here
			pr.SetXForwarded()
		},
		// A pool per sandbox and network slot: guest addresses are reused
		// by later sandboxes (see hostwire.SandboxTransports), and a resumed
		// sandbox's connections from before its pause are dead.
		Transport: pool,
		// Stream responses (server-sent events, Connect server streams).
		FlushInterval: -1,
		// The guest answered: the Transport may still be reading the
		// request body (see hostwire.FullDuplex).
		ModifyResponse: func(*http.Response) error {
			hostwire.FullDuplex(w)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			a.log.Debug("proxy", "sandbox", id, "port", port, "err", err)
			a.pools.Reset(route.Pool)
			http.Error(w, "sandbox port "+port+" is not reachable", http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}
