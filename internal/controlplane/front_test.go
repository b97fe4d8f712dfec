package controlplane_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/sitetls/sitetlstest"
)

const domain = "hearth.test"

// serve starts a control plane with cfg on a loopback port and returns its
// listener; it stops with the test.
func serve(t *testing.T, cfg config.Config) (*controlplane.ControlPlane, net.Listener) {
	t.Helper()
	return serveOpts(t, controlplane.Options{Config: cfg})
}

func serveOpts(t *testing.T, opts controlplane.Options) (*controlplane.ControlPlane, net.Listener) {
	t.Helper()
	opts.Config.DataDir = t.TempDir()
	cp, err := controlplane.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		cp.Close()
	})
	return cp, ln
}

// client resolves every name to addr, as DNS for *.hearth.test would.
func client(addr string, tlsConf *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: tlsConf,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func TestHTTPSDomainRouting(t *testing.T) {
	ca, certFile, keyFile := sitetlstest.Site(t, domain)
	redirect := freeAddr(t)
	cfg := config.Default()
	cfg.Domain, cfg.TLSCert, cfg.TLSKey, cfg.RedirectListen = domain, certFile, keyFile, redirect
	cp, ln := serve(t, cfg)
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	if got, want := cp.URL(ln), "https://api."+domain+":"+port; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	c := client(addr, &tls.Config{RootCAs: ca.Pool()})

	tests := []struct {
		name, url  string
		wantStatus int
		wantBody   string
	}{
		{"API on api.D", "https://api." + domain + "/healthz", 200, ""},
		{"E2B API on api.D", "https://api." + domain + "/sandboxes", 401, ""},
		{"envd of an unknown sandbox on <port>-<id>.D", "https://49983-nosuchsandbox." + domain + "/health", 502, "sandbox nosuchsandbox not found"},
		{"a guest port on <port>-<id>.D", "https://8080-nosuchsandbox." + domain + "/", 404, "sandbox nosuchsandbox not found"},
		{"dashboard on D", "https://" + domain + "/app/", 200, "<html"},
		{"dashboard on app.D", "https://app." + domain + "/app/", 200, "<html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || !strings.Contains(strings.ToLower(string(body)), strings.ToLower(tt.wantBody)) {
				t.Fatalf("GET %s = %d %.200s; want %d containing %q", tt.url, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}

	t.Run("plain HTTP only redirects", func(t *testing.T) {
		resp, err := client(redirect, nil).Get("http://api." + domain + "/v1/sandboxes?x=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://api." + domain + ":" + port + "/v1/sandboxes?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})
}

// /metrics is open to loopback clients only: behind a proxy on loopback
// that must mean the client the trusted proxy names, not the proxy.
func TestTrustedProxy(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		xff     string
		want    int
	}{
		{"loopback client, no proxy", nil, "", 200},
		{"header from an untrusted peer is ignored", nil, "203.0.113.5", 200},
		{"trusted proxy forwards a remote client", []string{"127.0.0.1/32"}, "203.0.113.5", 403},
		{"trusted proxy forwards a loopback client", []string{"127.0.0.1/32"}, "127.0.0.1", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.TrustedProxies = tt.trusted
			_, ln := serve(t, cfg)
			addr := ln.Addr().String()
			req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			resp, err := client(addr, nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET /metrics = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestBadFrontConfigurationFailsAtStart(t *testing.T) {
	ca, err := sitetlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, certFile, keyFile, err := ca.WriteSite(dir, "other.test")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mod     func(*config.Config)
		wantErr string
	}{
		{"certificate for another domain", func(c *config.Config) { c.TLSCert, c.TLSKey = certFile, keyFile }, "does not cover *." + domain},
		{"redirect without TLS", func(c *config.Config) { c.RedirectListen = "127.0.0.1:0" }, "--redirect-listen redirects to HTTPS"},
		{"bad trusted proxy", func(c *config.Config) { c.TrustedProxies = []string{"nginx"} }, `--trusted-proxy "nginx"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Domain, cfg.DataDir = domain, t.TempDir()
			tt.mod(&cfg)
			cp, err := controlplane.New(context.Background(), controlplane.Options{Config: cfg})
			if err == nil {
				cp.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A real domain in plain HTTP on a public address starts, with a warning
// that says what to do; loopback or a trusted proxy in front do not warn.
func TestPlainHTTPDomainWarning(t *testing.T) {
	tests := []struct {
		name, listen string
		trusted      []string
		warn         bool
	}{
		{"public address", "0.0.0.0:3000", nil, true},
		{"loopback", "127.0.0.1:3000", nil, false},
		{"behind a trusted proxy", "0.0.0.0:3000", []string{"10.0.0.0/8"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			cfg := config.Default()
			cfg.Domain, cfg.Listen, cfg.TrustedProxies, cfg.DataDir = "sandbox.example.com", tt.listen, tt.trusted, t.TempDir()
			cp, err := controlplane.New(context.Background(), controlplane.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			cp.Close()
			got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "give --tls-cert/--tls-key")
			if got != tt.warn {
				t.Fatalf("warning logged = %v, want %v:\n%s", got, tt.warn, logs.String())
			}
		})
	}
}
