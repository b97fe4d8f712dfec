package egressproxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/egressproxy"
	"github.com/hearth-sandbox/hearth/internal/pki"
)

// BenchmarkRequest: one keep-alive HTTPS GET (small echo) straight to the
// upstream ("direct", the baseline), through the proxy for a name a rule
// matches ("rule": TLS terminated, headers set, forwarded over a second
// TLS connection) and for a name none matches ("spliced"). Compare ns/op
// of the three in one run:
//
//	go test -run '^$' -bench BenchmarkRequest ./internal/egressproxy/
func BenchmarkRequest(b *testing.B) {
	up, upCA := upstream(b, "api.example.com", "other.test")
	upAddr := netip.MustParseAddrPort(up.Listener.Addr().String())
	egressCA, err := pki.LoadOrCreateCA(filepath.Join(b.TempDir(), "egress-ca"))
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p, err := egressproxy.Serve(l, egressproxy.Config{
		Rules: []egress.HeaderRule{{Domain: "api.example.com", Headers: map[string]string{"Authorization": "Bearer s"}}},
		CA:    egressCA, Dial: (&net.Dialer{}).DialContext,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return upAddr, nil },
		RootCAs:     upCA.Pool(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Stop)
	roots := x509.NewCertPool()
	roots.AddCert(egressCA.Certificate())
	roots.AddCert(upCA.Certificate())
	client := func(to string) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", to)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		}}
	}
	for _, c := range []struct{ name, host, to string }{
		{"direct", "api.example.com", upAddr.String()},
		{"rule", "api.example.com", l.Addr().String()},
		{"spliced", "other.test", l.Addr().String()},
	} {
		b.Run(c.name, func(b *testing.B) {
			hc := client(c.to)
			defer hc.CloseIdleConnections()
			for b.Loop() {
				resp, err := hc.Get("https://" + c.host + "/")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
