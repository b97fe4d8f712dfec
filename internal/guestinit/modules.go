package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ModulesDir is where the image builder puts the kernel modules the guest
// needs, flat, together with ModulesOrder: one file name per line in a
// dependency-respecting load order computed at build time from each
// module's .modinfo "depends=" field. The init does no dependency
// resolution of its own: that keeps PID 1 small and the order visible.
const (
	ModulesDir   = "/lib/modules/hearth"
	ModulesOrder = "modules.order"
)

// ModuleName returns the kernel's name of a module file
// ("virtio_net.ko" -> "virtio_net"); dashes become underscores as in
// /sys/module.
func ModuleName(file string) string {
	base := filepath.Base(file)
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// ReadModuleOrder reads dir/modules.order. Blank lines and # comments are
// ignored.
func ReadModuleOrder(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, ModulesOrder))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

// VolumeModules mount NFS volumes (hearth.volume); the image builder
// ships them and their dependencies (sunrpc, lockd, grace, nfs_acl,
// netfs/fscache where the kernel has them) in the image.
var VolumeModules = []string{"sunrpc", "grace", "lockd", "nfs_acl", "nfs", "nfsv3"}

// LoadModules loads the modules listed in dir/modules.order with
// finit_module, in order. A module already present in /sys/module (built
// in, or loaded earlier) is skipped. Parameters for a module come from the
// kernel command line ("virtio_mmio.device=..."), as modprobe would pass
// them. A module that fails to load is reported and skipped: the
// remaining ones may still give a usable VM (e.g. vsock is optional).
// The volume modules load only when the command line mounts a volume
// (most boots need none, and every module costs boot time under TCG).
func LoadModules(dir string, cl Cmdline, logf func(string, ...any)) error {
	files, err := ReadModuleOrder(dir)
	if err != nil {
		return fmt.Errorf("module order: %w", err)
	}
	var errs []error
	for _, file := range files {
		name := ModuleName(file)
		if _, err := os.Stat("/sys/module/" + name); err == nil {
			continue
		}
		if len(cl.Volumes) == 0 && slices.Contains(VolumeModules, name) {
			continue
		}
		if err := finitModule(filepath.Join(dir, file), strings.Join(cl.ModuleParams[name], " ")); err != nil {
			logf("module %s: %v", name, err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func finitModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
