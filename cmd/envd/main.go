// Command envd is hearth's in-guest daemon: the guest's init starts it and
// the host agent, the control plane's proxy and the E2B SDK talk to it on TCP
// 49983. Build it static (CGO_ENABLED=0): the guest image has no libc
// guarantees.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/initsecret"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

func run() error {
	port := flag.Int("port", 49983, "TCP port to listen on")
	listenAddr := flag.String("listen-addr", "", "address to listen on (empty: all interfaces)")
	syncClock := flag.Bool("sync-clock", true, "set the system clock from /init's timestamp (needs CAP_SYS_TIME)")
	version := flag.Bool("version", false, "print the envd version and exit")
	flag.Parse()
	if *version {
		fmt.Println(envd.Version)
		return nil
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := envd.Config{Logger: log}
	// The agent's commitment to the first /init's secret (absent when an
	// older agent booted this guest: then the first /init is open).
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		h, err := initsecret.FromCmdline(string(b))
		if err != nil {
			return err
		}
		cfg.InitHash = h
	}
	if !*syncClock {
		cfg.SetClock = func(time.Time) error { return errors.New("clock sync disabled by --sync-clock=false") }
	}
	srv := envd.New(cfg)
	defer srv.Close()

	addr := net.JoinHostPort(*listenAddr, strconv.Itoa(*port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	httpSrv := srv.HTTPServer(addr)

	// SIGHUP is ignored: as a child of a minimal init there is no terminal,
	// and a stray hangup must not take the sandbox's control channel down.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("envd listening", "addr", ln.Addr().String(), "version", envd.Version)

	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		_ = httpSrv.Close()
	}
	return nil
}
