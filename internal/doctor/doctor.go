// Package doctor checks what this host can run and explains why: KVM (by
// booting a guest, not by opening /dev/kvm), the VMM binaries, the kernel
// features the root-disk, network and page-server code needs, and the
// images. Each check is a real probe; none changes the host beyond a
// throwaway file, namespace or device-mapper table that it removes again.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/auto"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
)

// Check is one capability line.
type Check struct {
	Name   string
	OK     bool
	Detail string // what was found, or why not and how to fix it
}

// Report is the doctor's result.
type Report struct {
	Checks []Check
	VMM    string // chosen driver variant, "" when none
	Rootfs string // root-disk backend the agent would pick
}

// CanRun reports whether the host can run sandboxes at all.
func (r Report) CanRun() bool { return r.VMM != "" }

// Options for Run.
type Options struct {
	DataDir string
}

// Run performs every check.
func Run(ctx context.Context, opts Options) Report {
	var r Report
	add := func(c Check) { r.Checks = append(r.Checks, c) }

	kernel := image.KernelPath(opts.DataDir)
	probeKernel := kernel
	if _, err := os.Stat(kernel); err != nil {
		probeKernel = ""
	}
	sel := auto.New(auto.Options{KernelPath: probeKernel, Logger: slog.New(slog.DiscardHandler)})
	driver, results, _ := sel.Select(ctx)
	byName := map[string]error{}
	for _, res := range results {
		byName[res.Driver] = res.Err
	}
	add(resultCheck("KVM usable (guest boot)", byName["qemu-kvm"], "a KVM guest booted"))
	add(binaryCheck("firecracker binary", "firecracker", "install a release from github.com/firecracker-microvm/firecracker/releases"))
	add(resultCheck("firecracker usable", byName["firecracker"], "a Firecracker guest booted"))
	add(qemuCheck(ctx))
	add(resultCheck("qemu TCG", byName["qemu-tcg"], "software emulation; ~1.6 s boots"))
	add(dmCheck(ctx))
	add(uffdCheck())
	add(deviceCheck("loop devices", "/dev/loop-control", "modprobe loop"))
	add(deviceCheck("tun", "/dev/net/tun", "modprobe tun"))
	add(netnsCheck())
	add(iptablesCheck(ctx))
	reflink := reflinkCheck(opts.DataDir)
	add(reflink)
	add(imagesCheck(opts.DataDir))

	r.VMM = auto.Variant(driver)
	r.Rootfs = pickRootfs(r.Checks, reflink.OK)
	return r
}

func resultCheck(name string, err error, okDetail string) Check {
	if err == nil {
		return Check{Name: name, OK: true, Detail: okDetail}
	}
	return Check{Name: name, Detail: strings.TrimPrefix(err.Error(), vmm.ErrUnsupported.Error()+": ")}
}

func binaryCheck(name, bin, fix string) Check {
	p, err := exec.LookPath(bin)
	if err != nil {
		return Check{Name: name, Detail: bin + " not in PATH; " + fix}
	}
	return Check{Name: name, OK: true, Detail: p}
}

func qemuCheck(ctx context.Context) Check {
	c := binaryCheck("qemu binary", "qemu-system-x86_64", "apt-get install qemu-system-x86")
	if !c.OK {
		return c
	}
	v, err := qemu.New(qemu.Options{}).Version(ctx)
	if err != nil {
		return Check{Name: c.Name, Detail: err.Error()}
	}
	c.Detail = c.Detail + ": " + strings.TrimPrefix(v, "QEMU emulator ")
	return c
}

// dmCheck: dmsetup, the control node, a snapshot target, and a real table
// created and removed (dmsetup alone succeeds on kernels without dm).
func dmCheck(ctx context.Context) Check {
	const name = "device-mapper"
	if _, err := exec.LookPath("dmsetup"); err != nil {
		return Check{Name: name, Detail: "dmsetup not in PATH; apt-get install dmsetup"}
	}
	if err := rootfs.DMUsable(ctx); err != nil {
		if strings.Contains(err.Error(), "No such device") {
			return Check{Name: name, Detail: "the kernel has no device-mapper driver (/dev/mapper/control: No such device); modprobe dm_mod dm_snapshot, or use a kernel with CONFIG_BLK_DEV_DM"}
		}
		return Check{Name: name, Detail: err.Error()}
	}
	dev := fmt.Sprintf("hearth-doctor-%d", os.Getpid())
	out, err := exec.CommandContext(ctx, "dmsetup", "create", dev, "--table", "0 8 zero").CombinedOutput()
	if err != nil {
		return Check{Name: name, Detail: "dmsetup create failed: " + strings.TrimSpace(string(out))}
	}
	_ = exec.CommandContext(ctx, "dmsetup", "remove", dev).Run()
	return Check{Name: name, OK: true, Detail: "snapshot target available; a test table was created and removed"}
}

func uffdCheck() Check {
	const name = "userfaultfd"
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	sysOK := errno == 0
	if sysOK {
		unix.Close(int(fd))
	}
	f, devErr := os.OpenFile("/dev/userfaultfd", os.O_RDWR, 0)
	if devErr == nil {
		f.Close()
	}
	switch {
	case sysOK && devErr == nil:
		return Check{Name: name, OK: true, Detail: "syscall and /dev/userfaultfd"}
	case sysOK:
		return Check{Name: name, OK: true, Detail: "syscall (no /dev/userfaultfd: " + devErr.Error() + ")"}
	case devErr == nil:
		return Check{Name: name, OK: true, Detail: "/dev/userfaultfd (syscall: " + errno.Error() + "; sysctl vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE)"}
	default:
		return Check{Name: name, Detail: "syscall: " + errno.Error() + "; /dev/userfaultfd: " + devErr.Error() + " (kernel ≥ 5.11 with CONFIG_USERFAULTFD; lazy resume falls back to file-backed memory)"}
	}
}

func deviceCheck(name, path, fix string) Check {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Check{Name: name, Detail: fmt.Sprintf("%s: %v (%s)", path, err, fix)}
	}
	f.Close()
	return Check{Name: name, OK: true, Detail: path}
}

// netnsCheck unshares a network namespace on a locked thread that is then
// discarded (never unlocked), so no other goroutine ever runs in it.
func netnsCheck() Check {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		return Check{Name: "netns", Detail: "unshare(CLONE_NEWNET): " + err.Error() + " (needs root or CAP_SYS_ADMIN)"}
	}
	return Check{Name: "netns", OK: true, Detail: "created a network namespace"}
}

func iptablesCheck(ctx context.Context) Check {
	c := binaryCheck("iptables", "iptables", "apt-get install iptables")
	if !c.OK {
		return c
	}
	out, err := exec.CommandContext(ctx, "iptables", "-w", "5", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		return Check{Name: c.Name, Detail: "iptables -t nat -S: " + strings.TrimSpace(string(out))}
	}
	return c
}

// reflinkCheck clones a file inside the data dir with FICLONE.
func reflinkCheck(dataDir string) Check {
	const name = "reflink data dir"
	if dataDir == "" {
		return Check{Name: name, Detail: "no data dir given (--data-dir)"}
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return Check{Name: name, Detail: err.Error()}
	}
	src, err := os.CreateTemp(dataDir, ".doctor-reflink-*")
	if err != nil {
		return Check{Name: name, Detail: err.Error()}
	}
	defer os.Remove(src.Name())
	defer src.Close()
	_, _ = src.Write(make([]byte, 4096))
	dst, err := os.CreateTemp(dataDir, ".doctor-reflink-*")
	if err != nil {
		return Check{Name: name, Detail: err.Error()}
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	fsType := "unknown"
	var st unix.Statfs_t
	if unix.Statfs(dataDir, &st) == nil {
		fsType = fsName(st.Type)
	}
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return Check{Name: name, Detail: fmt.Sprintf("%s on %s cannot reflink (%v); clones use an xfs pool in a loop file, or use xfs (mkfs.xfs -m reflink=1) / btrfs", dataDir, fsType, err)}
	}
	return Check{Name: name, OK: true, Detail: dataDir + " on " + fsType}
}

func fsName(magic int64) string {
	switch magic {
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs 0x%x", magic)
}

func imagesCheck(dataDir string) Check {
	const name = "images built"
	if dataDir == "" {
		return Check{Name: name, Detail: "no data dir given (--data-dir)"}
	}
	var missing, found []string
	for label, p := range map[string]string{
		"kernel": image.KernelPath(dataDir),
		"tiny":   image.RootfsPath(dataDir, image.Tiny),
		"base":   image.RootfsPath(dataDir, image.Base),
	} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, label)
		} else {
			found = append(found, label)
		}
	}
	if len(missing) > 0 {
		sortStrings(missing)
		return Check{Name: name, Detail: "missing " + strings.Join(missing, ", ") + " in " + filepath.Join(dataDir, "images") + "; run hearth image build --data-dir " + dataDir}
	}
	return Check{Name: name, OK: true, Detail: "kernel, tiny, base in " + filepath.Join(dataDir, "images")}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// pickRootfs mirrors rootfs.Select's order without its side effects (it
// would create the xfs pool).
func pickRootfs(checks []Check, reflinkOK bool) string {
	ok := map[string]bool{}
	for _, c := range checks {
		ok[c.Name] = c.OK
	}
	switch {
	case ok["device-mapper"]:
		return "devicemapper"
	case reflinkOK:
		return "reflink"
	case ok["loop devices"] && haveBinary("mkfs.xfs"):
		return "reflink (xfs pool in a loop file)"
	default:
		return "copy"
	}
}

func haveBinary(name string) bool { _, err := exec.LookPath(name); return err == nil }

// Format writes the report: one line per check, then the picks.
func Format(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		status := "OK"
		if !c.OK {
			status = "MISSING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, c.Name, oneLine(c.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	vmmLine := r.VMM
	if vmmLine == "" {
		vmmLine = "none: this host cannot run sandboxes (install qemu-system-x86)"
	}
	_, err := fmt.Fprintf(w, "\nagent would use: vmm %s, rootfs %s\n", vmmLine, r.Rootfs)
	return err
}

// oneLine keeps the table one row per check: tool output spanning lines
// is joined and long text cut.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}

// ErrCannotRun is returned by the command when no VMM can run.
var ErrCannotRun = errors.New("no VMM can run sandboxes on this host")

// Timeout bounds a whole doctor run (probe boots are the slow part).
const Timeout = 60 * time.Second
