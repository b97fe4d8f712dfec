package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
)

// Inventory is what an agent on a data dir holds on its host, as the
// kernel and the file system see it (not as the agent believes): the
// leak check of crash, load and cycle tests and of `hearth bench load`.
type Inventory struct {
	VMMs       []string `json:"vmm_processes"`      // pids of VMMs of this data dir's sandboxes
	Namespaces []string `json:"network_namespaces"` // /run/netns entries with the agent's prefix
	Links      []string `json:"links"`              // host links with the agent's prefix
	Loops      []string `json:"loop_devices"`       // loop devices backed by files of sandboxes (the rootfs pool's excluded)
	Mounts     []string `json:"mounts"`             // mounts below the data dir (the rootfs pool's excluded)
	RAMFiles   []string `json:"ram_files"`          // guest RAM files of running QEMU sandboxes
	RunDirs    []string `json:"run_dirs"`           // DATA/sandboxes/<id>
}

// Total counts every item.
func (in Inventory) Total() int {
	return len(in.VMMs) + len(in.Namespaces) + len(in.Links) + len(in.Loops) + len(in.Mounts) + len(in.RAMFiles) + len(in.RunDirs)
}

// TakeInventory lists what the agent with this data dir (and the default
// network prefix) holds. Errors reading one source leave that list empty:
// an inventory is a diagnostic, not a gate on its own.
func TakeInventory(dataDir string) Inventory {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	var in Inventory
	sandboxes := filepath.Join(abs, "sandboxes") + "/"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(sandboxes)) {
			in.VMMs = append(in.VMMs, filepath.Base(filepath.Dir(p)))
		}
	}
	prefix, _ := netIdentity(abs)
	ns, _ := filepath.Glob(filepath.Join("/run/netns", prefix+"*"))
	in.Namespaces = ns
	if ifaces, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ifaces {
			if strings.HasPrefix(e.Name(), prefix) {
				in.Links = append(in.Links, e.Name())
			}
		}
	}
	pool := filepath.Join(abs, "rootfs-pool")
	if out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && strings.HasPrefix(f[1], abs+"/") && !strings.HasPrefix(f[1], pool) {
				in.Loops = append(in.Loops, l)
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && strings.HasPrefix(f[4], abs+"/") && f[4] != pool {
				in.Mounts = append(in.Mounts, f[4])
			}
		}
	}
	if dir, err := sandboxsnap.DefaultMemoryDir(abs); err == nil {
		in.RAMFiles, _ = filepath.Glob(filepath.Join(dir, "*.ram"))
	}
	if ents, err := os.ReadDir(sandboxes); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				in.RunDirs = append(in.RunDirs, e.Name())
			}
		}
	}
	slices.Sort(in.Mounts)
	return in
}
