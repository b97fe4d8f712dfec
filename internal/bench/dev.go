package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/devstack"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
)

// Dev is an in-process `hearth dev` in a throw-away data dir, for
// `hearth bench --dev`.
type Dev struct {
	URL    string
	APIKey string
	dir    string
	stack  *devstack.Stack
}

// StartDev starts control plane + agent on a free loopback port, with the
// guest images of imagesFrom (a data dir where `hearth image build` ran).
// It needs root, like `hearth dev`.
func StartDev(ctx context.Context, imagesFrom string, log *slog.Logger) (_ *Dev, err error) {
	if imagesFrom == "" {
		return nil, errors.New("--dev needs --images-from DIR (a data dir with built images: hearth image build --data-dir DIR)")
	}
	if _, err := os.Stat(filepath.Join(imagesFrom, "images")); err != nil {
		return nil, fmt.Errorf("no images in %s: %w (build them with: hearth image build --data-dir %s)", imagesFrom, err, imagesFrom)
	}
	dir, err := os.MkdirTemp("", "hearth-bench-")
	if err != nil {
		return nil, err
	}
	d := &Dev{dir: dir}
	defer func() {
		if err != nil {
			d.Close(context.WithoutCancel(ctx))
		}
	}()
	cfg := config.Default()
	cfg.DataDir, cfg.Listen, cfg.LogLevel = dir, "127.0.0.1:0", "warn"
	if d.stack, err = devstack.Start(ctx, devstack.Options{Config: cfg, ImagesFrom: imagesFrom, Logger: log}); err != nil {
		return nil, fmt.Errorf("start the dev stack: %w", err)
	}
	d.URL, d.APIKey = d.stack.URL, d.stack.Credentials.APIKey
	return d, nil
}

// DataDir is the stack's (throw-away) data dir.
func (d *Dev) DataDir() string { return d.dir }

// Close stops the stack (and any sandbox left), unmounts the rootfs pool
// the agent mounted in the data dir, and removes the data dir.
func (d *Dev) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	if d.stack != nil {
		errs = append(errs, d.stack.Close(ctx))
	}
	// The pool stays mounted after the agent stops (by design, for agent
	// restarts); a throw-away data dir must not leave it behind.
	pool := filepath.Join(d.dir, "rootfs-pool")
	if _, err := os.Stat(pool); err == nil {
		if err := (&rootfs.Pool{Mount: pool}).Close(); err != nil {
			errs = append(errs, err)
			return errors.Join(errs...) // never delete through a live mount
		}
	}
	errs = append(errs, os.RemoveAll(d.dir))
	return errors.Join(errs...)
}
