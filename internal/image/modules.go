package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/guestinit"
)

// GuestModules are the modules the guest needs, in the order that works
// with the Debian cloud kernel (DESIGN.md §5). Required ones must exist
// as a module or be built in; the vsock ones are loaded where present.
var GuestModules = append([]GuestModule{
	{"virtio_ring", true},
	{"virtio", true},
	{"virtio_mmio", true},
	{"virtio_blk", true},
	{"virtio_console", true},
	{"failover", true},
	{"net_failover", true},
	{"virtio_net", true},
	{"vsock", false},
	{"vmw_vsock_virtio_transport_common", false},
	{"vmw_vsock_virtio_transport", false},
}, volumeModules()...)

// GuestModule is a kernel module the guest loads.
type GuestModule struct {
	Name     string
	Required bool
}

// volumeModules are the guest init's VolumeModules, optional (QEMU hosts'
// volumes; loaded only when a boot mounts one).
func volumeModules() []GuestModule {
	var out []GuestModule
	for _, m := range guestinit.VolumeModules {
		out = append(out, GuestModule{Name: m})
	}
	return out
}

type kmodule struct {
	name string
	path string // inside the unpacked package
	deps []string
}

// selectModules resolves GuestModules against an unpacked kernel module
// tree (lib/modules/<release>) and returns the files to ship, in a
// dependency-respecting load order. Dependencies come from each module's
// .modinfo "depends=" (the .deb ships no modules.dep: depmod runs at
// install time). Built-in modules (modules.builtin) are skipped.
func selectModules(ctx context.Context, modRoot string) ([]kmodule, error) {
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modRoot, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			builtin[moduleNameOf(sc.Text())] = true
		}
	}
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modRoot, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isModuleFile(p) {
			paths[moduleNameOf(p)] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules: %w", err)
	}
	var (
		order   []kmodule
		visited = map[string]bool{}
		visit   func(name string, chain []string) error
	)
	visit = func(name string, chain []string) error {
		if visited[name] || builtin[name] {
			return nil
		}
		if len(chain) > 32 {
			return fmt.Errorf("module dependency cycle: %v", chain)
		}
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %v) not in the kernel package", name, chain)
		}
		raw, err := readModule(ctx, p)
		if err != nil {
			return err
		}
		deps, err := moduleDeps(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		visited[name] = true
		order = append(order, kmodule{name: name, path: p, deps: deps})
		return nil
	}
	for _, m := range GuestModules {
		if builtin[m.Name] {
			continue
		}
		if _, ok := paths[m.Name]; !ok {
			if m.Required {
				return nil, fmt.Errorf("required module %s is neither built in nor shipped", m.Name)
			}
			continue
		}
		if err := visit(m.Name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func isModuleFile(p string) bool {
	return strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst") || strings.HasSuffix(p, ".ko.gz")
}

// moduleNameOf maps a module path to the kernel's module name.
func moduleNameOf(p string) string {
	base := filepath.Base(strings.TrimSpace(p))
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return guestinit.ModuleName(base)
}

// readModule returns a module's uncompressed bytes. Compressed modules
// are decompressed here, at build time, because finit_module on these
// kernels may lack in-kernel decompression and the init stays simple.
func readModule(ctx context.Context, p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(p, ".xz"):
		return execDecompress(ctx, b, "xz", "-dc")
	case strings.HasSuffix(p, ".zst"):
		return execDecompress(ctx, b, "zstd", "-dcq")
	case strings.HasSuffix(p, ".gz"):
		return gunzip(b)
	}
	return b, nil
}

// moduleDeps reads "depends=" from the module's .modinfo section.
func moduleDeps(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, guestinit.ModuleName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}
