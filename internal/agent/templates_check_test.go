package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// namedDriver is the fake driver under another name, writing that
// driver's snapshot format.
type namedDriver struct {
	*fakeDriver
	name string
}

func (d namedDriver) Name() string { return d.name }
func (d namedDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{SnapshotFormat: d.name}
}

// TestCheckTemplateDrivers: a snapshot template spawns on a host running
// the driver it was made with, Firecracker included (its disk path is
// stable through the per-VM mount namespace), and its shape is enforced.
func TestCheckTemplateDrivers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		host, tmpl string
		vcpus, mem int
		disk       int
		wantErr    error  // errors.Is target
		wantField  string // FieldError field
	}{
		{"firecracker template on firecracker", "firecracker", "firecracker", 2, 512, 4096, nil, ""},
		{"qemu template on qemu", "qemu", "qemu", 2, 512, 4096, nil, ""},
		{"firecracker template on qemu", "qemu", "firecracker", 2, 512, 4096, ErrInvalid, ""},
		{"qemu template on firecracker", "firecracker", "qemu", 2, 512, 4096, ErrInvalid, ""},
		{"firecracker template, other vcpus", "firecracker", "firecracker", 4, 512, 4096, nil, "vcpus"},
		{"firecracker template, other memory", "firecracker", "firecracker", 2, 1024, 4096, nil, "memory_mb"},
		{"firecracker template, smaller disk", "firecracker", "firecracker", 2, 512, 1024, nil, "disk_size_mb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := &Manager{d: Deps{DataDir: t.TempDir(), Driver: namedDriver{&fakeDriver{}, tc.host}, Snapshots: &fakeSnapshots{}}}
			meta := templateMeta{TemplateID: "t1", Driver: tc.tmpl, VCPUs: 2, MemoryMB: 512, DiskSizeMB: 2048}
			if err := os.MkdirAll(m.templateDir("t1"), 0o700); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(meta)
			if err := os.WriteFile(filepath.Join(m.templateDir("t1"), templateMetaFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			spec := Spec{ID: "s1", TemplateID: "t1", VCPUs: tc.vcpus, MemoryMB: tc.mem, DiskSizeMB: tc.disk}
			got, err := m.checkTemplate(&spec)
			var fe *FieldError
			switch {
			case tc.wantField != "":
				if !errors.As(err, &fe) || fe.Field != tc.wantField {
					t.Fatalf("checkTemplate = %v, want a field error on %s", err, tc.wantField)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("checkTemplate = %v, want %v", err, tc.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("checkTemplate = %v", err)
				}
				if got.TemplateID != "t1" || spec.DiskSizeMB != meta.DiskSizeMB {
					t.Fatalf("template %+v, spec disk %d (want the template's %d)", got, spec.DiskSizeMB, meta.DiskSizeMB)
				}
			}
		})
	}
}
