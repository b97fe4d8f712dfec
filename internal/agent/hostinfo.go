package agent

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostInfo is the Ping payload: capacity and usage of this host.
type HostInfo struct {
	HostID        string
	Driver        string
	RootfsBackend string
	VCPUs         int   // nproc
	MemoryMB      int64 // MemTotal
	DiskMB        int64 // size of the data dir's file system
	DiskFreeMB    int64 // available to the agent
	UsedVCPUs     int   // given to sandboxes holding a VM
	UsedMemoryMB  int64
	UsedDiskMB    int64 // in use on the data dir's file system
	SandboxCount  int   // every sandbox known, paused ones included
}

// HostInfo measures the host now.
func (a *Agent) HostInfo() (HostInfo, error) {
	mem, err := memTotalMB()
	if err != nil {
		return HostInfo{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(a.opts.DataDir, &st); err != nil {
		return HostInfo{}, fmt.Errorf("statfs %s: %w", a.opts.DataDir, err)
	}
	bs := int64(st.Bsize)
	total, free := int64(st.Blocks)*bs/MiB, int64(st.Bavail)*bs/MiB
	vcpus, usedMem, count := a.mgr.usage()
	return HostInfo{
		HostID:        a.opts.HostID,
		Driver:        a.opts.Driver.Name(),
		RootfsBackend: a.opts.Disks.Name(),
		VCPUs:         runtime.NumCPU(),
		MemoryMB:      mem,
		DiskMB:        total,
		DiskFreeMB:    free,
		UsedVCPUs:     vcpus,
		UsedMemoryMB:  int64(usedMem),
		UsedDiskMB:    total - int64(st.Bfree)*bs/MiB,
		SandboxCount:  count,
	}, nil
}

func memTotalMB() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/meminfo: %w", err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("/proc/meminfo: no MemTotal")
}
