package auto

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

func TestSelectOnThisHost(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64; install: apt-get install qemu-system-x86")
	}
	quiet := slog.New(slog.DiscardHandler)
	s := New(Options{Logger: quiet})
	d, results, err := s.Select(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 {
		t.Fatalf("results %+v, want one per candidate", results)
	}
	if v := Variant(d); !strings.HasPrefix(v, "qemu-") && v != "firecracker" {
		t.Fatalf("chose %q", v)
	}
	// Without a kernel the KVM probes cannot prove a boot, so they fail.
	for _, r := range results {
		if r.Driver != "qemu-tcg" && r.Err == nil {
			t.Errorf("%s probed OK without a probe kernel", r.Driver)
		}
	}
	d2, _, _ := s.Select(context.Background())
	if d2 != d {
		t.Fatal("Select is not cached")
	}

	_, _, err = New(Options{Logger: quiet, Prefer: "firecracker"}).Select(context.Background())
	if !errors.Is(err, vmm.ErrUnsupported) {
		t.Fatalf("Prefer firecracker without a bootable KVM: err %v, want ErrUnsupported", err)
	}
}
