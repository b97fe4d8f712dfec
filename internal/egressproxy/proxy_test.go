package egressproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/egressproxy"
	"github.com/hearth-sandbox/hearth/internal/pki"
)

// echoed is what the upstream server saw.
type echoed struct {
	Host    string
	Headers map[string][]string
}

// upstream is a real TLS server for several names, signed by its own CA,
// that answers every request with the request's host and headers.
func upstream(t testing.TB, names ...string) (*httptest.Server, *pki.CA) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "upstream-ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(time.Hour, names...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(echoed{Host: r.Host, Headers: r.Header})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ca
}

func TestProxy(t *testing.T) {
	names := []string{"api.example.com", "a.b.example.org", "c.example.org", "example.org", "other.test"}
	up, upCA := upstream(t, names...)
	upAddr := netip.MustParseAddrPort(up.Listener.Addr().String())

	egressCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "egress-ca"))
	if err != nil {
		t.Fatal(err)
	}
	rules := []egress.HeaderRule{
		{Domain: "api.example.com", Headers: map[string]string{"Authorization": "Bearer s3cret"}},
		{Domain: "*.example.org", Headers: map[string]string{"X-Key": "wild"}},
		{Domain: "*.b.example.org", Headers: map[string]string{"X-Key": "deeper", "X-Extra": "1"}},
	}
	var d net.Dialer
	dials := make(chan string, 100)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := egressproxy.Serve(l, egressproxy.Config{
		Rules: rules, CA: egressCA,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials <- addr
			return d.DialContext(ctx, network, addr)
		},
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return upAddr, nil },
		RootCAs:     upCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)

	// The guest trusts the egress CA (installed by the agent) and, for this
	// test, the upstream's CA as if it were a public one.
	roots := x509.NewCertPool()
	roots.AddCert(egressCA.Certificate())
	roots.AddCert(upCA.Certificate())

	for _, c := range []struct {
		name        string
		intercepted bool
		want        map[string]string // header → the one value upstream must see
	}{
		{"api.example.com", true, map[string]string{"Authorization": "Bearer s3cret", "X-Key": "guest"}},
		{"API.Example.com", true, map[string]string{"Authorization": "Bearer s3cret"}},
		{"a.b.example.org", true, map[string]string{"X-Key": "deeper", "X-Extra": "1", "Authorization": "Bearer guest"}},
		{"c.example.org", true, map[string]string{"X-Key": "wild", "Authorization": "Bearer guest"}},
		{"example.org", false, map[string]string{"X-Key": "guest", "Authorization": "Bearer guest"}},
		{"other.test", false, map[string]string{"X-Key": "guest", "Authorization": "Bearer guest"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
				ServerName: c.name, RootCAs: roots, NextProtos: []string{"h2", "http/1.1"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			st := tc.ConnectionState()
			issuer := st.PeerCertificates[0].Issuer.String()
			if got := st.PeerCertificates[0].CheckSignatureFrom(egressCA.Certificate()) == nil; got != c.intercepted {
				t.Fatalf("intercepted = %v (issuer %s), want %v", got, issuer, c.intercepted)
			}
			if c.intercepted && st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
			}
			br := bufio.NewReader(tc)
			// Two requests on one connection: keep-alive works and the
			// second one is rewritten too.
			for i := range 2 {
				req, _ := http.NewRequest("GET", "https://"+c.name+"/path", nil)
				req.Header.Set("Authorization", "Bearer guest")
				req.Header.Set("X-Key", "guest")
				if err := req.Write(tc); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				var got echoed
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("request %d: %d %v", i, resp.StatusCode, err)
				}
				if got.Host != c.name {
					t.Errorf("upstream saw Host %q, want %q", got.Host, c.name)
				}
				for k, v := range c.want {
					if vs := got.Headers[k]; len(vs) != 1 || vs[0] != v {
						t.Errorf("upstream saw %s: %q, want exactly [%q]", k, vs, v)
					}
				}
			}
		})
	}
	t.Run("Host other than the server name", func(t *testing.T) {
		// Domain fronting: a CDN routing by Host would hand the secret
		// to another of its sites.
		tc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{ServerName: "api.example.com", RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		req, _ := http.NewRequest("GET", "https://c.example.org/", nil)
		if err := req.Write(tc); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("status %d, want 421", resp.StatusCode)
		}
	})
	// Every upstream connection went to the original destination.
	close(dials)
	n := 0
	for a := range dials {
		n++
		if a != upAddr.String() {
			t.Errorf("dialled %s, want %s", a, upAddr)
		}
	}
	if n == 0 {
		t.Error("no upstream dials")
	}
}

// TestProxyUpstreamChecks: a destination the dialer refuses (the egress
// policy) is a 502 for an intercepted name, and an upstream whose
// certificate does not verify for the name is never sent the secret.
func TestProxyUpstreamChecks(t *testing.T) {
	up, _ := upstream(t, "api.example.com") // its CA is not trusted below
	upAddr := netip.MustParseAddrPort(up.Listener.Addr().String())
	egressCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "egress-ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
	}{
		{"policy denies", func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("connection refused by policy")
		}},
		{"untrusted upstream", (&net.Dialer{}).DialContext},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p, err := egressproxy.Serve(l, egressproxy.Config{
				Rules: []egress.HeaderRule{{Domain: "api.example.com", Headers: map[string]string{"Authorization": "x"}}},
				CA:    egressCA, Dial: c.dial,
				OriginalDst: func(net.Conn) (netip.AddrPort, error) { return upAddr, nil },
				RootCAs:     x509.NewCertPool(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			hc := &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
				},
				TLSClientConfig: &tls.Config{RootCAs: egressCA.Pool()},
			}, Timeout: 30 * time.Second}
			resp, err := hc.Get("https://api.example.com/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
		})
	}
}

// A connection straight to the proxy (not redirected) has the proxy's own
// address as its destination: it is closed, never dialled (a loop).
func TestProxyRefusesItself(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	dialled := make(chan string, 1)
	p, err := egressproxy.Serve(l, egressproxy.Config{
		Rules: []egress.HeaderRule{{Domain: "api.example.com", Headers: map[string]string{"A": "b"}}},
		CA:    ca,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled <- addr
			return nil, errors.New("no")
		},
		OriginalDst: func(c net.Conn) (netip.AddrPort, error) { return netip.ParseAddrPort(c.LocalAddr().String()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v: want the connection closed at once", n, err)
	}
	select {
	case a := <-dialled:
		t.Fatalf("dialled %s", a)
	default:
	}
}

// Stop ends spliced connections whatever their upstream does (a pause
// stops the proxy while the guest's connections may be idle).
func TestStopEndsSplices(t *testing.T) {
	idle, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := idle.Accept(); err == nil {
			accepted <- c // held open, never written to
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := egressproxy.Serve(l, egressproxy.Config{
		CA: ca, Dial: (&net.Dialer{}).DialContext,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return netip.ParseAddrPort(idle.Addr().String()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("not TLS\r\n")); err != nil { // spliced at once
		t.Fatal(err)
	}
	var up net.Conn
	select {
	case up = <-accepted:
		defer up.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("the splice never reached the upstream")
	}
	stopped := make(chan struct{})
	go func() { p.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop hangs on a spliced connection with an idle upstream")
	}
}

func TestServeRefusesBadRules(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = egressproxy.Serve(l, egressproxy.Config{
		Rules: []egress.HeaderRule{{Domain: "*", Headers: map[string]string{"A": "b"}}},
		CA:    ca, Dial: (&net.Dialer{}).DialContext,
	})
	if err == nil {
		t.Fatal("Serve accepted the rule domain \"*\"")
	}
}
