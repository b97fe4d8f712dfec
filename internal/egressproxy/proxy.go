// Package egressproxy is a sandbox's transparent HTTPS proxy on its host
// (E2B's network.rules header transforms): the guest's TCP connections to
// port 443 are redirected to it inside the sandbox's network namespace. It
// reads the server name (SNI) of the TLS ClientHello; for a name a rule
// matches it terminates TLS with a certificate its CA issues for that name
// (HTTP/1.1 only, by ALPN), sets the rule's headers on every request and
// forwards it over TLS to the original destination, verifying that
// server's certificate for the name with the host's trust roots. Any other
// connection is spliced through untouched. The values it injects (resolved
// secrets) exist only in the host agent; the guest sees the CA certificate.
package egressproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

// Issuer issues TLS server certificates for a DNS name (*pki.CA).
type Issuer interface {
	IssueServer(ttl time.Duration, hosts ...string) (*tls.Certificate, error)
}

// Config configures a sandbox's proxy.
type Config struct {
	Rules []egress.HeaderRule
	CA    Issuer
	// Dial opens upstream connections. The agent's dials from inside the
	// sandbox's namespace, so the sandbox's egress policy applies to them.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OriginalDst is where the guest meant to connect (default: the
	// SO_ORIGINAL_DST of a REDIRECTed connection).
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// RootCAs verifies upstream servers; nil: the host's roots (on Linux
	// Go honours SSL_CERT_FILE and SSL_CERT_DIR).
	RootCAs *x509.CertPool
	Logger  *slog.Logger
}

// helloTimeout bounds the wait for a ClientHello; a client that expects
// the server to speak first is spliced when it passes.
const helloTimeout = 10 * time.Second

// leafTTL: leaves live in memory only, at most maxLeaves per proxy.
const (
	leafTTL   = 24 * time.Hour
	maxLeaves = 1024
)

// Proxy serves one sandbox's redirected connections.
type Proxy struct {
	cfg   Config
	l     net.Listener
	http  *http.Server
	conns chan net.Conn // decrypted connections for http
	done  chan struct{}

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve serves l (opened in the sandbox's namespace) until Stop.
func Serve(l net.Listener, cfg Config) (*Proxy, error) {
	if err := egress.ValidateRules(cfg.Rules); err != nil {
		return nil, err
	}
	if cfg.CA == nil || cfg.Dial == nil {
		return nil, errors.New("egressproxy: CA and Dial are required")
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = OriginalDst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{cfg: cfg, l: l, conns: make(chan net.Conn), done: make(chan struct{}),
		leaves: map[string]*tls.Certificate{}, open: map[net.Conn]struct{}{}}
	rp := &httputil.ReverseProxy{
		Rewrite:       p.rewrite,
		Transport:     connTransport{},
		FlushInterval: -1, // streams (SSE, chunked) pass through as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			cfg.Logger.Info("egress proxy: upstream", "host", r.Host, "err", err)
			http.Error(w, "hearth egress proxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.http = &http.Server{
		Handler:           sameHost(rp),
		ReadHeaderTimeout: time.Minute,
		IdleTimeout:       5 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*interceptedConn))
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				c.(*interceptedConn).upstream.CloseIdleConnections()
			}
		},
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		_ = p.http.Serve(chanListener{p})
	}()
	go func() {
		defer p.wg.Done()
		p.accept()
	}()
	return p, nil
}

// Stop closes the listener and every connection; idempotent.
func (p *Proxy) Stop() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.open {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.l.Close()
	close(p.done)
	_ = p.http.Close()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			return false
		}
		p.open[c] = struct{}{}
	} else {
		delete(p.open, c)
	}
	return true
}

func (p *Proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c, true) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *Proxy) handle(c net.Conn) {
	defer p.track(c, false)
	dst, err := p.cfg.OriginalDst(c)
	if err != nil {
		p.cfg.Logger.Warn("egress proxy: original destination", "err", err)
		_ = c.Close()
		return
	}
	// A connection made to the proxy's own address (not redirected) has
	// that address as its destination: dialling it would loop.
	if self, err := netip.ParseAddrPort(p.l.Addr().String()); err == nil && dst == self {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	sni, peeked := peekServerName(c)
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(peeked), c)}
	rule, ok := egress.MatchRule(p.cfg.Rules, sni)
	if !ok {
		p.splice(pc, dst)
		return
	}
	leaf, err := p.leaf(sni)
	if err != nil {
		p.cfg.Logger.Error("egress proxy: certificate", "name", sni, "err", err)
		_ = c.Close()
		return
	}
	tc := tls.Server(pc, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		// HTTP/2 clients fall back to HTTP/1.1, the one protocol whose
		// requests this proxy rewrites.
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	hctx, cancel := context.WithTimeout(context.Background(), helloTimeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		p.cfg.Logger.Debug("egress proxy: guest handshake", "name", sni, "err", err)
		_ = c.Close()
		return
	}
	ic := &interceptedConn{Conn: tc, sni: sni, rule: rule}
	ic.upstream = p.upstream(sni, dst)
	select {
	case p.conns <- ic:
	case <-p.done:
		_ = tc.Close()
	}
}

// upstream is the transport of one intercepted connection: every request
// goes to the guest's original destination, verified for its server name.
func (p *Proxy) upstream(sni string, dst netip.AddrPort) *http.Transport {
	return &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			raw, err := p.cfg.Dial(ctx, "tcp", dst.String())
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: p.cfg.RootCAs, NextProtos: []string{"http/1.1"}})
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, err
			}
			return tc, nil
		},
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls and slow APIs are the guest's business
	}
}

// sameHost refuses a request whose Host is not the connection's server
// name (421): the verified upstream certificate is for that name, and a
// server that routes by Host (a CDN) must not hand the rule's headers to
// another site it serves (domain fronting).
func sameHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ic := r.Context().Value(connKey{}).(*interceptedConn)
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !strings.EqualFold(strings.TrimSuffix(host, "."), ic.sni) {
			http.Error(w, "hearth egress proxy: Host "+r.Host+" is not the TLS server name "+ic.sni, http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rewrite sends a request to its connection's destination with the
// rule's headers replacing any of the same name.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ic := pr.In.Context().Value(connKey{}).(*interceptedConn)
	pr.Out.URL.Scheme = "https"
	pr.Out.URL.Host = ic.sni
	pr.Out.Host = pr.In.Host
	for k, v := range ic.rule.Headers {
		pr.Out.Header.Set(k, v)
	}
}

func (p *Proxy) leaf(name string) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.leaves[name]; ok && time.Until(c.Leaf.NotAfter) > time.Hour {
		return c, nil
	}
	c, err := p.cfg.CA.IssueServer(leafTTL, name)
	if err != nil {
		return nil, err
	}
	if len(p.leaves) >= maxLeaves {
		clear(p.leaves) // a wildcard rule meets any number of names
	}
	p.leaves[name] = c
	return c, nil
}

// splice copies bytes both ways between the guest and its destination.
func (p *Proxy) splice(c net.Conn, dst netip.AddrPort) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	up, err := p.cfg.Dial(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		p.cfg.Logger.Debug("egress proxy: splice dial", "dst", dst, "err", err)
		return
	}
	defer up.Close()
	// Stop closes both ends: an idle upstream would otherwise hold the
	// copy from it, and Stop with it, forever.
	if !p.track(up, true) {
		return
	}
	defer p.track(up, false)
	errc := make(chan error, 2)
	cp := func(w, r net.Conn) {
		_, err := io.Copy(w, r)
		if cw, ok := w.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		errc <- err
	}
	go cp(up, c)
	go cp(c, up)
	<-errc
	<-errc
}

type connKey struct{}

// interceptedConn is a decrypted guest connection and what it is for.
type interceptedConn struct {
	*tls.Conn
	sni      string
	rule     egress.HeaderRule
	upstream *http.Transport
}

// connTransport sends a request over its guest connection's transport.
type connTransport struct{}

func (connTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return r.Context().Value(connKey{}).(*interceptedConn).upstream.RoundTrip(r)
}

// chanListener hands decrypted connections to the HTTP server.
type chanListener struct{ p *Proxy }

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.conns:
		return c, nil
	case <-l.p.done:
		return nil, net.ErrClosed
	}
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.p.l.Addr() }

// prefixConn replays the bytes read while peeking.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// peekServerName reads c's ClientHello and returns its server name ("" for
// none or not TLS) and every byte it read.
func peekServerName(c net.Conn) (string, []byte) {
	var buf bytes.Buffer
	var name string
	errStop := errors.New("stop")
	ro := readOnlyConn{r: io.TeeReader(c, &buf)}
	_ = tls.Server(ro, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		name = h.ServerName
		return nil, errStop
	}}).Handshake()
	return name, buf.Bytes()
}

// readOnlyConn lets tls.Server parse a ClientHello without answering.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(b []byte) (int, error)     { return c.r.Read(b) }
func (readOnlyConn) Write([]byte) (int, error)        { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return nil }
func (readOnlyConn) RemoteAddr() net.Addr             { return nil }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = readOnlyConn{}
