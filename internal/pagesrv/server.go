package pagesrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Listen creates the unix socket a VMM connects to (Firecracker's
// mem_backend.backend_path), replacing a stale socket file, readable and
// writable by the owner only (the socket must only be reachable by the VMM).
func Listen(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// Serve accepts one VMM connection on ln, performs the Uffd handshake and
// serves page faults until the VMM is gone (nil) or ctx is done (ctx.Err()).
// ln is closed before Serve returns: one listener serves one restore.
func Serve(ctx context.Context, ln *net.UnixListener, cfg Config) (Stats, error) {
	cfg.defaults()
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn, err := ln.AcceptUnix()
	ln.Close()
	if err != nil {
		if ctx.Err() != nil {
			return Stats{}, ctx.Err()
		}
		return Stats{}, fmt.Errorf("accept VMM connection: %w", err)
	}
	return ServeConn(ctx, conn, cfg)
}

// ServeConn performs the handshake on an accepted connection and serves the
// session. conn is closed once the handshake is read: Firecracker does not
// use the socket afterwards (it closes its end right after sending).
func ServeConn(ctx context.Context, conn *net.UnixConn, cfg Config) (Stats, error) {
	cfg.defaults()
	hs, err := ReadHandshake(ctx, conn, cfg.HandshakeTimeout)
	conn.Close()
	if err != nil {
		return Stats{}, err
	}
	s, err := NewSession(hs.Uffd, hs.Regions, hs.PeerPID, cfg)
	if err != nil {
		return Stats{}, err
	}
	cfg.Logger.Debug("uffd handshake done", "regions", len(hs.Regions), "peer_pid", hs.PeerPID)
	return s.Run(ctx)
}
