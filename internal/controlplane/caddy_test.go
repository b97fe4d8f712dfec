package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/sitetls/sitetlstest"
)

// syncBuffer collects the control plane's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Debian's Caddy, configured by deploy/caddy/Caddyfile, terminates TLS for
// hearth.test and *.hearth.test in front of plain-HTTP hearth. With
// --trusted-proxy hearth sees the client's address (here 127.0.0.2, Caddy
// connects from 127.0.0.1); without it, Caddy's.
func TestCaddyInFront(t *testing.T) {
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		t.Fatal("caddy is not installed: scripts/deps.sh installs Debian's caddy")
	}
	ca, certFile, keyFile := sitetlstest.Site(t, domain)
	for _, tt := range []struct {
		name       string
		trusted    []string
		wantRemote string
	}{
		{"trusted proxy", []string{"127.0.0.1/32"}, "remote=127.0.0.2 "},
		{"untrusted proxy", nil, "remote=127.0.0.1 "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			cfg := config.Default()
			cfg.Domain, cfg.TrustedProxies = domain, tt.trusted
			_, ln := serveOpts(t, controlplane.Options{
				Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})

			httpsAddr, httpAddr := freeAddr(t), freeAddr(t)
			_, httpsPort, _ := net.SplitHostPort(httpsAddr)
			_, httpPort, _ := net.SplitHostPort(httpAddr)
			cmd := exec.Command(caddy, "run", "--adapter", "caddyfile", "--config", filepath.Join("..", "..", "deploy", "caddy", "Caddyfile"))
			cmd.Env = append(os.Environ(),
				"HEARTH_DOMAIN="+domain, "HEARTH_TLS_CERT="+certFile, "HEARTH_TLS_KEY="+keyFile,
				"HEARTH_UPSTREAM="+ln.Addr().String(), "HEARTH_HTTPS_PORT="+httpsPort, "HEARTH_HTTP_PORT="+httpPort,
				"HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
			var caddyOut syncBuffer
			cmd.Stdout, cmd.Stderr = &caddyOut, &caddyOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

			// Connections come from 127.0.0.2, a client other than Caddy.
			d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return d.DialContext(ctx, network, "127.0.0.1:"+httpsPort)
				},
			}}
			get := func(url string) (int, string) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for {
					resp, err := c.Get(url)
					if err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						return resp.StatusCode, string(b)
					}
					if time.Now().After(deadline) {
						t.Fatalf("GET %s: %v\ncaddy: %s", url, err, caddyOut.String())
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			if code, body := get("https://api." + domain + "/healthz"); code != 200 {
				t.Fatalf("api through caddy: %d %s", code, body)
			}
			if code, body := get("https://49983-nosuchsandbox." + domain + "/health"); code != 502 || !strings.Contains(body, "sandbox nosuchsandbox not found") {
				t.Fatalf("sandbox host through caddy: %d %s", code, body)
			}
			if code, _ := get("https://" + domain + "/app/"); code != 200 {
				t.Fatalf("dashboard through caddy: %d", code)
			}
			if !strings.Contains(logs.String(), tt.wantRemote) {
				t.Fatalf("hearth's request log does not show %q:\n%s", tt.wantRemote, logs.String())
			}
		})
	}
}
