package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker"
)

// A VMM without a shared file system device (Firecracker's capabilities)
// refuses volumes with an error that names what is missing; mounts are
// checked before anything is made.
func TestVolumesNeedFileShares(t *testing.T) {
	t.Parallel()
	if (firecracker.New(firecracker.Options{})).Capabilities().FileShares {
		t.Fatal("firecracker declares file shares")
	}
	h := newHarness(t, false)
	ctx := context.Background()
	if err := h.m.CreateVolume("vol1"); err != nil {
		t.Fatal(err)
	}
	sp := spec("novfs1")
	sp.Volumes = []VolumeMount{{VolumeID: "vol1", Path: "/data"}}
	_, err := h.m.Create(ctx, sp)
	if !errors.Is(err, ErrUnimplemented) || !strings.Contains(err.Error(), "virtio-fs") {
		t.Fatalf("create with volumes on the fake driver: %v", err)
	}
	if len(h.driver.configs) != 0 {
		t.Fatal("a machine was configured")
	}

	h.m.d.Driver = fileShareDriver{h.driver}
	h.m.d.Virtiofsd = "/bin/true"
	for _, tc := range []struct {
		name string
		mod  func(*Spec)
		want error
	}{
		{"unknown volume", func(s *Spec) { s.Volumes[0].VolumeID = "nope" }, ErrNotFound},
		{"relative path", func(s *Spec) { s.Volumes[0].Path = "data" }, ErrInvalid},
		{"snapshot template", func(s *Spec) { s.TemplateKind = sbx.KindSnapshot }, ErrInvalid},
	} {
		s := spec("novfs2")
		s.Volumes = []VolumeMount{{VolumeID: "vol1", Path: "/data"}}
		tc.mod(&s)
		if err := h.m.checkVolumes(s); !errors.Is(connectErrKind(err), tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// connectErrKind maps a FieldError to ErrInvalid as the RPC layer does.
func connectErrKind(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return ErrInvalid
	}
	return err
}

type fileShareDriver struct{ *fakeDriver }

func (fileShareDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{FileShares: true, SnapshotFormat: "fake"}
}

// killShares stops the virtiofsd a previous agent left (its pid file in
// the sandbox's vm dir), and nothing whose command line is not the
// sandbox's.
func TestKillSharesOfACrashedAgent(t *testing.T) {
	t.Parallel()
	runDir := filepath.Join(t.TempDir(), "sandboxes", "sbx1")
	vm := filepath.Join(runDir, "vm")
	if err := os.MkdirAll(vm, 0o700); err != nil {
		t.Fatal(err)
	}
	start := func(arg string) *exec.Cmd {
		// A command line naming the socket, as virtiofsd's does.
		cmd := exec.Command("/bin/sh", "-c", "sleep 60", "--socket-path="+arg)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	ours := start(filepath.Join(vm, "virtiofsd-0.sock"))
	other := start("/elsewhere/virtiofsd-0.sock")
	for name, c := range map[string]*exec.Cmd{"virtiofsd-0.pid": ours, "virtiofsd-1.pid": other} {
		if err := os.WriteFile(filepath.Join(vm, name), []byte(strconv.Itoa(c.Process.Pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- ours.Wait() }()
	killShares(runDir)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox's daemon still runs")
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(other.Process.Pid)); err != nil {
		t.Fatal("the process that is not the sandbox's was killed")
	}
}
