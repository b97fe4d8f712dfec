// Package envdtest runs a real envd on a loopback port for other packages'
// tests (the agent, proxy, E2B API, dashboard and envd client all talk to
// envd; outside a VM it runs fine on the test host).
package envdtest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
)

// Start serves envd with cfg until the test ends and returns its base URL
// (http://127.0.0.1:PORT). A nil Logger discards; a nil SetClock never
// touches the host's clock.
func Start(t testing.TB, cfg envd.Config) string {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SetClock == nil {
		cfg.SetClock = func(time.Time) error { return nil }
	}
	srv := envd.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer(ln.Addr().String())
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			_ = hs.Close() // streams still open
		}
	})
	return "http://" + ln.Addr().String()
}
