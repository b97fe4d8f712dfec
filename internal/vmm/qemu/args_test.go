package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

func TestArgs(t *testing.T) {
	t.Parallel()
	base := vmm.Config{
		ID: "s1", RunDir: "/run/hearth/s1", KernelPath: "/img/vmlinux", KernelArgs: "hearth.ip=169.254.0.21/30",
		RootDisk: "/disks/s1.qcow2", RootDiskFormat: "qcow2", VCPUs: 2, MemoryMB: 512,
		NetNS: "/run/netns/s1", TapName: "tap0", MAC: "02:fc:00:00:00:05",
	}
	tests := []struct {
		name    string
		accel   string
		mutate  func(*vmm.Config)
		restore *vmm.RestoreSpec
		want    []string // substrings of the joined command line
		notWant []string
	}{
		{name: "tcg boot", accel: AccelTCG, want: []string{
			"-M microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=off -accel tcg,tb-size=128",
			"-cpu qemu64,+arat",
			"-smp 2 -m 512M -nodefaults -no-user-config -nographic -no-reboot",
			"-append console=ttyS0 tsc_early_khz=2596120 tsc=reliable panic=-1 reboot=t nowatchdog sysctl.vm.compaction_proactiveness=0 hearth.ip=169.254.0.21/30",
			"-drive id=root,if=none,file=/disks/s1.qcow2,format=qcow2",
			"-device virtio-blk-device,drive=root",
			"-netdev tap,id=net0,ifname=tap0,script=no,downscript=no,vhost=off -device virtio-net-device,netdev=net0,mac=02:fc:00:00:00:05",
			"-chardev file,id=console,path=/run/hearth/s1/console.log,append=on -serial chardev:console",
			"-qmp unix:/run/hearth/s1/qmp.sock,server=on,wait=off",
			"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		}, notWant: []string{"-incoming", "memory-backend", "-cpu host", "-runas"}},
		{name: "unprivileged", accel: AccelTCG,
			mutate: func(c *vmm.Config) { c.RunAsUID, c.RunAsGID = 1000000007, 1000000007 },
			want: []string{"-sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny -runas 1000000007:1000000007",
				"-add-fd fd=3,set=1 -add-fd fd=4,set=1 -drive id=root,if=none,file=/dev/fdset/1,file.locking=off,format=qcow2"}},
		{name: "unprivileged restore", accel: AccelTCG,
			mutate:  func(c *vmm.Config) { c.RunAsUID, c.RunAsGID = 1000000007, 1000000007 },
			restore: &vmm.RestoreSpec{StatePath: "/s"},
			want:    []string{"-add-fd fd=4,set=1 -add-fd fd=5,set=1 -drive id=root,if=none,file=/dev/fdset/1"}},
		{name: "kvm", accel: AccelKVM, want: []string{"-accel kvm -cpu host"}, notWant: []string{"tb-size", "arat", "pit=off"}},
		{name: "file-backed RAM, commas escaped", accel: AccelTCG,
			mutate: func(c *vmm.Config) { c.MemoryFile = "/mem/a,b.ram" },
			want: []string{"microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=off,memory-backend=mem",
				"-object memory-backend-file,id=mem,size=512M,mem-path=/mem/a,,b.ram,share=on"}},
		{name: "private restore", accel: AccelTCG,
			mutate:  func(c *vmm.Config) { c.MemoryFile = "/mem/t.ram" },
			restore: &vmm.RestoreSpec{StatePath: "/s", MemoryPrivate: true},
			want:    []string{"share=off", "-S -incoming defer"}},
		{name: "no disk, no nic", accel: AccelTCG,
			mutate:  func(c *vmm.Config) { c.RootDisk, c.TapName = "", "" },
			notWant: []string{"-drive", "-netdev"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			d := New(Options{Accel: tc.accel, TSCKHz: 2596120})
			m, err := d.newMachine(cfg, tc.restore)
			if err != nil {
				t.Fatal(err)
			}
			line := strings.Join(m.Args(), " ")
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("missing %q in\n%s", w, line)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(line, w) {
					t.Errorf("unexpected %q in\n%s", w, line)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := vmm.Config{RunDir: "/r", KernelPath: "/k", VCPUs: 1, MemoryMB: 128}
	bad := []func(*vmm.Config){
		func(c *vmm.Config) { c.RunDir = "" },
		func(c *vmm.Config) { c.KernelPath = "" },
		func(c *vmm.Config) { c.MemoryMB = 0 },
		func(c *vmm.Config) { c.RootDiskFormat = "vmdk" },
		func(c *vmm.Config) { c.TapName = "tap0" }, // no MAC
		func(c *vmm.Config) { c.RunDir = "/" + strings.Repeat("x", 110) },
	}
	if err := validate(ok); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for i, f := range bad {
		c := ok
		f(&c)
		if err := validate(c); err == nil {
			t.Errorf("case %d: invalid config accepted: %+v", i, c)
		}
	}
}

func TestHostTSCKHz(t *testing.T) {
	t.Parallel()
	khz, err := HostTSCKHz()
	if err != nil {
		t.Skipf("no cpu MHz in /proc/cpuinfo here: %v", err)
	}
	if khz < 100_000 || khz > 10_000_000 {
		t.Fatalf("TSC %d kHz is implausible", khz)
	}
}

// TestWithPIT: a state stream keeps the PIT when it has the PIT's section
// among its device sections (at its end, after any RAM).
func TestWithPIT(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	devices := []byte("QEVM\x00\x00\x00\x03\x04\x00\x00\x00\x09\x05i8259\x00\x00\x00\x00")
	for _, tc := range []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"no pit", devices, false},
		{"pit", append(slices.Clone(devices), pitSection...), true},
		{"pit after 2 MiB of RAM", append(append(slices.Clone(devices), make([]byte, 2<<20)...), pitSection...), true},
		// Only the tail is read: a match deep in RAM is not a section.
		{"match in RAM only", append(append(slices.Clone(pitSection), make([]byte, 2<<20)...), devices...), false},
		{"other instance", []byte("\x05i8254\x00\x00\x00\x01"), false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(p, tc.stream, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := withPIT(p); err != nil || got != tc.want {
			t.Errorf("%s: withPIT = %v, %v; want %v", tc.name, got, err, tc.want)
		}
		m := &Machine{d: New(Options{Accel: AccelTCG}), pit: tc.want}
		if line := strings.Join(m.Args(), " "); strings.Contains(line, "pit=off") == tc.want {
			t.Errorf("%s: machine with pit=%v: %s", tc.name, tc.want, line)
		}
	}
	if _, err := withPIT(filepath.Join(dir, "missing")); err == nil {
		t.Error("withPIT of a missing file succeeded")
	}
}
