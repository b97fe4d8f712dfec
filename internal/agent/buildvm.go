package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// buildRunner boots template-build VMs the way sandboxes boot (same VMM
// driver, network slots, kernel and envd), but on a disk the build owns and
// outside the sandbox table: a build VM lives for one step.
type buildRunner struct{ m *Manager }

var _ templatebuild.Runner = buildRunner{}

// BuildRunner returns the Runner template builds on this host use.
func (m *Manager) BuildRunner() templatebuild.Runner { return buildRunner{m} }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r buildRunner) Boot(ctx context.Context, disk string, shape templatebuild.Shape) (_ templatebuild.Guest, err error) {
	m := r.m
	id := "bld" + randomHex(6)
	g := &buildGuest{m: m, id: id, runDir: filepath.Join(m.d.DataDir, "builds", "vms", id)}
	defer func() {
		if err != nil {
			_ = g.Close(context.WithoutCancel(ctx))
		}
	}()
	slot, err := m.d.Net.Setup(ctx, id, NetOptions{Egress: egress.Policy{AllowInternet: shape.AllowInternet}})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	g.netUp = true
	sb := newSandbox(Spec{ID: id, VCPUs: shape.VCPUs, MemoryMB: shape.MemoryMB}, g.runDir, m.log)
	cfg, err := m.machineConfig(sb, rootfs.Disk{Path: disk, Format: "raw"}, slot)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, err
	}
	machine, err := m.d.Driver.NewMachine(cfg)
	if err != nil {
		return nil, fmt.Errorf("vmm: %w", err)
	}
	g.machine = machine
	if err := machine.Start(ctx); err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = machine.Wait(context.Background())
		close(exited)
	}()
	_, envdAddr := guestAddrs(slot.Address)
	token := randomHex(16)
	g.envd = m.d.Dial("http://"+envdAddr, token)
	if err := waitHealthy(ctx, g.envd, exited, m.d.BootTimeout); err != nil {
		return nil, err
	}
	if err := g.envd.Init(ctx, EnvdInit{AccessToken: token, DefaultUser: "root", DefaultDir: "/root", Now: time.Now()}); err != nil {
		return nil, fmt.Errorf("envd init: %w", err)
	}
	return g, nil
}

type buildGuest struct {
	m      *Manager
	id     string
	runDir string

	mu      sync.Mutex // guards the fields below (Close may race a failing Exec's unwind)
	netUp   bool
	machine vmm.Machine
	envd    Envd
	closed  bool
}

func (g *buildGuest) Exec(ctx context.Context, c templatebuild.Command, out func(bool, []byte)) (int, error) {
	if len(c.Args) == 0 {
		return 0, errors.New("empty command")
	}
	res, err := g.envd.Exec(ctx, ExecSpec{Cmd: c.Args[0], Args: c.Args[1:], Env: c.Env, Cwd: c.Cwd, User: c.User},
		func(s Stream, p []byte) error { out(s == Stderr, p); return nil })
	if err != nil {
		return 0, err
	}
	if res.Error != "" && res.Code < 0 {
		return res.Code, fmt.Errorf("%s", res.Error)
	}
	return res.Code, nil
}

// Close syncs the guest's page cache to the disk (the VM is then killed,
// which leaves the journal to replay but loses no written data), stops
// the VM and releases its network slot. A failed sync is an error: the
// disk may lack the step's writes.
func (g *buildGuest) Close(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	if g.envd != nil && g.machine != nil {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := g.envd.Exec(sctx, ExecSpec{Cmd: "sync", User: "root", Cwd: "/"}, func(Stream, []byte) error { return nil })
		cancel()
		if err == nil && res.Code != 0 {
			err = fmt.Errorf("exit code %d", res.Code)
		}
		if err != nil {
			// Killing the VM now could lose the step's writes.
			errs = append(errs, fmt.Errorf("sync the build VM's disk (the image needs a sync program): %w", err))
		}
		closeEnvd(g.envd)
	}
	if g.machine != nil {
		if err := g.machine.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop vm: %w", err))
		} else if g.m.d.Cgroups != nil {
			if err := g.m.d.Cgroups.Remove(g.id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if g.netUp {
		if err := g.m.d.Net.Teardown(ctx, g.id); err != nil {
			errs = append(errs, fmt.Errorf("network: %w", err))
		}
	}
	if err := os.RemoveAll(g.runDir); err != nil && !strings.Contains(err.Error(), "no such file") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
