package service

import (
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// A built or snapshot template's disk is its sandboxes' default and
// minimum; base templates keep the default disk and take any size.
func TestSandboxShapeTemplateDisk(t *testing.T) {
	ptr := func(v int) *int { return &v }
	built := store.Template{Name: "web", Kind: sandbox.KindBase, ArtifactID: "b1", VCPUs: 2, MemoryMB: 1024, DiskSizeMB: 3072}
	frozen := store.Template{Name: "srv", Kind: sandbox.KindSnapshot, ArtifactID: "b2", VCPUs: 2, MemoryMB: 1024, DiskSizeMB: 2048}
	plain := store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 1024, DiskSizeMB: sandbox.DefaultDiskSizeMB}
	for _, tc := range []struct {
		name    string
		tpl     store.Template
		disk    *int
		want    int
		wantErr bool
	}{
		{"built: its disk", built, nil, 3072, false},
		{"built: larger asked", built, ptr(8192), 8192, false},
		{"built: smaller refused", built, ptr(2048), 0, true},
		{"snapshot: its disk", frozen, nil, 2048, false},
		{"snapshot: smaller refused", frozen, ptr(1024), 0, true},
		{"base: default", plain, nil, sandbox.DefaultDiskSizeMB, false},
		{"base: smaller is fine", plain, ptr(2048), 2048, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := sandboxShape(tc.tpl, CreateSandboxInput{Template: tc.tpl.Name, DiskSizeMB: tc.disk})
			if (err != nil) != tc.wantErr || err == nil && sb.DiskSizeMB != tc.want {
				t.Errorf("disk %d, err %v; want %d (error: %v)", sb.DiskSizeMB, err, tc.want, tc.wantErr)
			}
		})
	}
}
